-- SESSION with a 5 s gap: per user, ordered by time, a click more than 5 s after the previous
-- one starts a new session (exactly 5 s apart stays in the session, as Flink merges windows
-- that touch). A session is [first click, last click + 5 s).
CREATE VIEW marked AS
SELECT *, CASE WHEN ts - lag(ts) OVER (PARTITION BY "user" ORDER BY ts) <= INTERVAL '5 seconds'
               THEN 0 ELSE 1 END AS starts_session
FROM input;
CREATE VIEW numbered AS
SELECT *, SUM(starts_session) OVER (PARTITION BY "user" ORDER BY ts ROWS UNBOUNDED PRECEDING) AS session
FROM marked;
SELECT "user", MIN(ts) AS window_start, MAX(ts) + INTERVAL '5 seconds' AS window_end,
       COUNT(*) AS events, SUM(clicks) AS clicks
FROM numbered
GROUP BY "user", session
