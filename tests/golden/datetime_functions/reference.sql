-- DuckDB has no to_date(text); CAST(d_text AS DATE) parses the same ISO dates.
SELECT id, date_trunc('hour', ts) AS hour, date_trunc('month', ts) AS month,
       EXTRACT(YEAR FROM ts) AS year, date_part('dow', ts) AS weekday, EXTRACT(DAY FROM d) AS day_of_month,
       ts + INTERVAL '90 minutes' AS later, ts - INTERVAL '1 day' AS day_before,
       CAST(d AS TIMESTAMP) AS midnight, CAST(d_text AS DATE) AS parsed
FROM input
WHERE d IS NULL OR d < DATE '2024-07-01'
