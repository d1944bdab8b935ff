-- Same SQL as the Sluice processor.
SELECT id, a IS NULL AS a_missing, COALESCE(a, b, -1) AS first_known, NULLIF(a, b) AS a_unless_b,
       a > 5 OR flag AS either, a > 5 AND flag AS both_true, NOT flag AS not_flag
FROM input
WHERE (a > 0 OR a IS NULL) AND NOT (b = 3)
