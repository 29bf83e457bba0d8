"""What every LanceDB table facereel creates shares (the index's and the control store's)."""

# Lance file format of new tables. 2.1 is built for random access, which is what facereel's
# reads are: one search record, or one event's faces, out of a large table, found through a
# scalar index. A record read at 100,000 stored searches took 1.06x its time at 100, against
# 1.55x with the default format (bench/records.py, BENCHMARKS.md). Tables made before keep
# the format they were made with.
FILE_FORMAT = "2.1"


def new_table_options() -> dict[str, str]:
    """``storage_options`` for ``create_table``: added to the connection's own."""
    return {"new_table_data_storage_version": FILE_FORMAT}
