-- Same SQL as the Sluice processor.
SELECT id, status, amount FROM input
WHERE status IN ('open', 'pending') AND amount BETWEEN 10 AND 100 AND id NOT IN (3, 4)
