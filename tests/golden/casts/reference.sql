-- Same SQL as the Sluice processor.
SELECT id, CAST(n_text AS BIGINT) AS parsed, CAST(n AS VARCHAR) AS shown, CAST(n AS DOUBLE) AS as_float,
       CAST(d_text AS DATE) AS day, CAST(ts_text AS TIMESTAMP) AS at,
       TRY_CAST(maybe AS INT) AS maybe_int, CAST(flag_text AS BOOLEAN) AS flag
FROM input
