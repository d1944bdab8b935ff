-- Same SQL as the Sluice processor (DuckDB spells the interval INTERVAL 5 SECOND).
SELECT a.k, a.x, b.y, a.ts AS a_ts, b.ts AS b_ts
FROM a JOIN b
  ON a.k = b.k AND a.ts BETWEEN b.ts - INTERVAL 5 SECOND AND b.ts + INTERVAL 5 SECOND
