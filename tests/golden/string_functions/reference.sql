-- Same SQL as the Sluice processor.
SELECT id, upper(name) AS up, lower(city) AS low, concat(name, '@', city) AS joined,
       name || '-' || code AS piped, substr(name, 2, 3) AS middle, length(name) AS len,
       character_length(city) AS city_len, trim(padded) AS trimmed, replace(city, 'o', '0') AS replaced,
       split_part(code, '-', 2) AS part, starts_with(name, 'Al') AS al, name LIKE '%an%' AS has_an
FROM input
