"""What every LanceDB table facereel creates shares (the index's and the control store's):
the format of new tables and the SQL literals their filters are written with."""

from __future__ import annotations

from datetime import UTC, datetime

# Lance file format of new tables. 2.1 is built for random access, which is what facereel's
# reads are: one search record, or one event's faces, out of a large table, found through a
# scalar index. A record read at 100,000 stored searches took 1.06x its time at 100, against
# 1.55x with the default format (bench/records.py, BENCHMARKS.md). Tables made before keep
# the format they were made with.
FILE_FORMAT = "2.1"


def new_table_options() -> dict[str, str]:
    """``storage_options`` for ``create_table``: added to the connection's own."""
    return {"new_table_data_storage_version": FILE_FORMAT}


def sql_str(value: str) -> str:
    """A SQL string literal for LanceDB filters."""
    return "'" + value.replace("'", "''") + "'"


def sql_timestamp(value: datetime) -> str:
    """A SQL timestamp literal for LanceDB filters (UTC, as the tables store times)."""
    return f"timestamp '{value.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%f')}'"


def event_filter(org_id: int, event_id: int) -> str:
    return f"org_id = {int(org_id)} AND event_id = {int(event_id)}"
