-- HOP(slide 5 s, size 10 s): a row at ts belongs to the windows starting at the multiples of
-- 5 s in (ts - 10 s, ts]: the 5-second bucket of ts and the one before it. generate_series
-- lists both starts; the WHERE keeps those whose [start, start + 10 s) holds ts.
SELECT w.window_start, w.window_start + INTERVAL '10 seconds' AS window_end, auction,
       COUNT(*) AS bids, SUM(price) AS total, MAX(price) - MIN(price) AS spread
FROM input,
     LATERAL (SELECT unnest(generate_series(time_bucket(INTERVAL '5 seconds', ts) - INTERVAL '5 seconds',
                                            time_bucket(INTERVAL '5 seconds', ts),
                                            INTERVAL '5 seconds')) AS window_start) AS w
WHERE ts >= w.window_start AND ts < w.window_start + INTERVAL '10 seconds'
GROUP BY w.window_start, auction
