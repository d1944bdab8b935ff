-- Same SQL as the Sluice processor.
SELECT id, unnest(nums) AS n FROM input
