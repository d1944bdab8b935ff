-- DuckDB's `/` always divides as floats; `//` is DataFusion's integer `/` for these non-negative operands.
SELECT id, qty * price AS total, qty + 1 AS next_qty, a // b AS quotient, a % b AS remainder,
       price / 2 AS half, a + price AS mixed, -a AS negated
FROM input
