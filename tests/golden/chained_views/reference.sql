-- Same SQL as the Sluice processor.
CREATE VIEW priced AS SELECT id, qty * price AS total, region FROM input WHERE qty IS NOT NULL;
CREATE TEMPORARY VIEW big AS SELECT id, total, upper(region) AS region FROM priced WHERE total > 100;
SELECT id, region, total * 2 AS double_total FROM big
