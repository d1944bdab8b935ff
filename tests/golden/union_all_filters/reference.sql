-- Same SQL as the Sluice processor.
SELECT id, 'cheap' AS band, price FROM input WHERE price < 20
UNION ALL
SELECT id, CASE WHEN status = 'open' THEN 'open' ELSE 'other' END AS band, price * 2 FROM input WHERE price >= 5
