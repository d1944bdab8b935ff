-- DuckDB has no TUMBLE table function: each row's 10 s window is time_bucket of its time.
SELECT P.id, P.name, A.id AS auction, P.window_start, P.window_start + INTERVAL 10 SECOND AS window_end
FROM (SELECT *, time_bucket(INTERVAL 10 SECOND, dateTime) AS window_start FROM person) P
JOIN (SELECT *, time_bucket(INTERVAL 10 SECOND, dateTime) AS window_start FROM auction) A
  ON P.id = A.seller AND P.window_start = A.window_start
