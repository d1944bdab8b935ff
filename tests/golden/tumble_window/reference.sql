-- TUMBLE(..., INTERVAL '10' SECOND) is DuckDB's time_bucket of 10 seconds (buckets start at the
-- Unix epoch, as Flink's do); window_end is the exclusive end, window_start + 10 seconds.
SELECT time_bucket(INTERVAL '10 seconds', ts) AS window_start,
       time_bucket(INTERVAL '10 seconds', ts) + INTERVAL '10 seconds' AS window_end,
       auction, COUNT(*) AS bids, COUNT(price) AS priced, COUNT(DISTINCT bidder) AS bidders,
       SUM(price) AS total, MIN(price) AS lowest, MAX(price) AS highest, AVG(price) AS mean
FROM input
GROUP BY 1, 2, auction
