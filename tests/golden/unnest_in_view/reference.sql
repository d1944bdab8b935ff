-- Same SQL as the Sluice processor.
CREATE VIEW tagged AS SELECT id, unnest(tags) AS tag FROM input;
SELECT id, upper(tag) AS tag FROM tagged WHERE tag <> 'skip'
