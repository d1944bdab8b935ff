#!/usr/bin/env python3
"""Computes each golden case's expected.jsonl independently of Sluice, with DuckDB.

For every folder next to this script that holds a pipeline.yaml, loads input.jsonl into a DuckDB
table named `input` with the types the pipeline's source declares, runs the case's reference.sql
(DuckDB dialect; views first, the last statement is the query) and writes its rows to
expected.jsonl the way arrow-json writes them: dates as "2024-03-01", timestamps as
"2024-03-01T12:00:00", NULL values left out of the object.

Usage: pip install duckdb pyyaml && python3 tests/golden/compute_expected.py [case ...]
"""

import datetime
import decimal
import json
import pathlib
import sys

import duckdb
import yaml

HERE = pathlib.Path(__file__).resolve().parent

DUCKDB_TYPES = {
    "boolean": "BOOLEAN",
    "int32": "INTEGER",
    "int64": "BIGINT",
    "float64": "DOUBLE",
    "string": "VARCHAR",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
    "list<int64>": "BIGINT[]",
    "list<string>": "VARCHAR[]",
}


def render(value):
    """A value as arrow-json writes it."""
    if isinstance(value, datetime.datetime):
        text = value.strftime("%Y-%m-%dT%H:%M:%S")
        if value.microsecond:
            text += f".{value.microsecond // 1000:03d}"
        return text
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, list):
        return [render(item) for item in value]
    return value


def compute(case: pathlib.Path):
    if not (case / "reference.sql").exists():
        return None  # Computed by hand; the case's README.md shows how.
    pipeline = yaml.safe_load((case / "pipeline.yaml").read_text())
    con = duckdb.connect()
    # Timestamps are naive (no time zone) in Sluice; keep DuckDB from applying a local zone.
    con.execute("SET TimeZone = 'UTC'")
    # Every source (and lookup table) is a table named like it, read from its `options.path`
    # (single-input cases: the source `input` and input.jsonl).
    for source in pipeline["sources"] + pipeline.get("lookups", []):
        columns = {field["name"]: DUCKDB_TYPES[field["type"]] for field in source["schema"]}
        path = case / source.get("options", {}).get("path", "input.jsonl")
        con.execute(
            f'CREATE TABLE "{source["name"]}" AS '
            "SELECT * FROM read_json(?, format = 'newline_delimited', columns = ?)",
            [str(path), columns],
        )
    statements = [s.strip() for s in strip_comments((case / "reference.sql").read_text()).split(";")]
    statements = [s for s in statements if s]
    for statement in statements[:-1]:
        con.execute(statement)
    result = con.execute(statements[-1])
    names = [column[0] for column in result.description]
    rows = result.fetchall()
    with open(case / "expected.jsonl", "w", encoding="utf-8") as out:
        for row in rows:
            record = {name: render(value) for name, value in zip(names, row) if value is not None}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(rows)


def strip_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))


def main() -> None:
    wanted = set(sys.argv[1:])
    for case in sorted(p.parent for p in HERE.glob("*/pipeline.yaml")):
        if wanted and case.name not in wanted:
            continue
        rows = compute(case)
        print(f"{case.name}: {'by hand, see README.md' if rows is None else f'{rows} rows'}")


if __name__ == "__main__":
    main()
