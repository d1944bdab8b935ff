-- DuckDB reads the lookup table as a plain table; FOR SYSTEM_TIME AS OF (the table's current rows) is dropped.
SELECT o.order_id, o.amount, c.name, upper(c.tier) AS tier
FROM orders AS o
LEFT JOIN customers AS c ON o.customer_id = c.id
WHERE o.amount > 10
