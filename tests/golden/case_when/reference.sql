-- Same SQL as the Sluice processor.
SELECT id,
       CASE WHEN score >= 90 THEN 'A' WHEN score >= 75 THEN 'B' WHEN score IS NULL THEN 'absent' ELSE 'C' END AS grade,
       CASE category WHEN 'x' THEN 1 WHEN 'y' THEN 2 END AS code,
       CASE WHEN category IS NULL THEN score * 2 ELSE score END AS weighted
FROM input
