-- Same SQL as the Sluice processor. The processor emits an upsert stream (one row per key
-- updated in each epoch); the runner keeps the last row per key (`upsert_key`), which must be
-- the batch result.
SELECT k, COUNT(*) AS n, SUM(v) AS total, MAX(v) AS highest, CAST(SUM(v) AS DOUBLE) / COUNT(*) AS mean
FROM input
WHERE v <> 0
GROUP BY k
