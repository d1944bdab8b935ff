-- Same SQL as the Sluice processor (DuckDB spells intervals INTERVAL 2 SECOND).
SELECT a.k, a.x, b.y
FROM a LEFT JOIN b
  ON a.k = b.k AND b.ts >= a.ts - INTERVAL 2 SECOND AND b.ts <= a.ts + INTERVAL 4 SECOND
  AND b.y <> 'b3'
