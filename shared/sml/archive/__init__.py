"""The event archive: every stored event as Parquet in S3, immutable, partitioned for Athena and DuckDB.

The layout and column names (``layout``), events to Arrow tables and back (``parquet``), the
writer's archive step, reading and compaction (``store``), tables rebuilt from the archive
(``rebuild``), questions over it with DuckDB or Athena (``query``) and the weekly run's window
sources (``sources``).
"""
