"""Data sources (see base.py): Parquet, CSV and JSON Lines files kept in the artifact store, and a
query against the company's own PostgreSQL. Importing the package registers them in SOURCES.

Adding a source: one module here with a ``DataSource`` subclass named in its class statement
(``class MySource(DataSource, name="mine")``) that lists its columns and yields its rows; a file
source also rewrites itself without purged rows. Add it to the shared table in
tests/workers/datasets/test_sources.py.
"""

from workers.datasets.sources import csv_file, jsonl_file, parquet_file, postgresql  # noqa: F401  (register)
from workers.datasets.sources.base import (
    SOURCES,
    DatasetSchema,
    DataSource,
    SchemaError,
    SourceError,
    SourceRecord,
    source_class,
    source_config_problem,
    source_records,
)

__all__ = ["SOURCES", "DataSource", "DatasetSchema", "SchemaError", "SourceError", "SourceRecord", "source_class",
           "source_config_problem", "source_records"]
