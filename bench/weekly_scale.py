"""The weekly run at scale: windows of 100k, 1M and 10M predictions in MariaDB and in the archive.

One 7-day window of N predictions × 20 numeric features (drift_bench's model, manifest and
10,000-row training reference; feature 0 shifted by 0.3 σ), each with both classes'
probabilities as the deployed classifier writes them (no labels), rows evenly spaced in time and stored
twice from the same generated values: in MariaDB ``sml_bench_scale10m`` (the writer's row format,
server-side ``LOAD DATA INFILE`` of 500,000-row CSV chunks written by DuckDB) and in an archive
folder as the writer's archive step and compaction leave it (the writer's batch objects of
100,000 rows, built from the arrays and checked equal to :func:`sml.archive.parquet.prediction_table`
of the writer's rows, then :func:`sml.archive.store.compact_partition` per day). The smaller
windows are the last rows of the same table: a window of ``size`` rows ends where the 7 days end
and lasts ``7 days × size / N``. Loading 10M rows took ~20 minutes on the shared 2-core machine
(~50 minutes with a row-by-row Python generator and ``LOAD DATA LOCAL``, hence this one).

Each measured run is a fresh process (peak RSS = ``VmHWM``, imports included):

- ``database``: :func:`sml.monitoring.job.run_drift_job` over the window (read, tests, quality,
  report, S3 and SNS on moto in-process, stored run), as the drift function runs it;
- ``duckdb``: the same job with the window read from the archive (drift summaries, quality with
  CBPE over the probabilities, refusals, versions; :class:`sml.archive.sources.ArchiveWindowSource`
  on a local folder behind an S3-shaped client).

Loading takes long at 10M (see :func:`prepare`), so it can be done once, outside the bench lock:
``python bench/weekly_scale.py --prepare N`` keeps the database and the archive folder;
``python bench/scale_bench.py`` then finds them and measures; ``--drop`` removes both.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pymysql
from common import MYSQL_SERVER, REPOSITORY
from drift_bench import CLASSES, FEATURE_NAMES, MODEL_NAME, WINDOW, WINDOW_END, bench_manifest

FULL_ROWS = 10_000_000
QUICK_ROWS = 300_000
DATABASE = "sml_bench_scale10m"
ARCHIVE_ROOT = Path(os.environ.get("SML_BENCH_SCALE_ARCHIVE", "/tmp"))
BUCKET, PREFIX = "bench", "archive/"
LOAD_CHUNK = 500_000
ARCHIVE_BATCH = 100_000
KS_FEATURES = ("feature_00", "feature_01", "feature_07")
_MARKER = "bench_scale_marker"
DATA_FORMAT = 2
"""What a prepared window holds (2: the classes' probabilities too); an earlier format is loaded again."""


@dataclass(frozen=True)
class Prepared:
    """What :func:`prepare` loaded: ``rows`` predictions, and seconds per part."""

    rows: int
    seconds: dict[str, float]


def window_length(size: int, rows: int) -> timedelta:
    """The window, ending at ``WINDOW_END``, that holds the last ``size`` of ``rows`` evenly spaced predictions."""
    return WINDOW * size / rows


def database(rows: int) -> str:
    """The database of a window of ``rows``: one per size, so a quick run never drops the full one."""
    return DATABASE if rows == FULL_ROWS else f"{DATABASE}_{rows}"


def archive_folder(rows: int) -> Path:
    """The archive folder of a window of ``rows`` (an S3-shaped folder, see ``archive_bench.FolderS3``)."""
    return ARCHIVE_ROOT / database(rows).replace("_", "-")


def _url(rows: int) -> Any:
    import sqlalchemy as sa

    return sa.URL.create("mysql+pymysql", username=MYSQL_SERVER["user"], host=MYSQL_SERVER["host"], port=MYSQL_SERVER["port"], database=database(rows))


def is_prepared(rows: int) -> bool:
    """Whether a complete earlier :func:`prepare` of ``rows`` left its database and archive."""
    if not (archive_folder(rows) / "complete.json").exists():
        return False
    try:
        connection = pymysql.connect(**MYSQL_SERVER, database=database(rows))
    except pymysql.err.OperationalError:
        return False
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT rows_loaded FROM {_MARKER}")
            (loaded,) = cursor.fetchone()
    except pymysql.err.ProgrammingError:
        return False
    finally:
        connection.close()
    complete = json.loads((archive_folder(rows) / "complete.json").read_text())
    return int(loaded) == rows == complete["rows"] and complete.get("format") == DATA_FORMAT


def drop(rows: int) -> None:
    """Remove the database and the archive folder of ``rows``."""
    admin = pymysql.connect(**MYSQL_SERVER, autocommit=True)
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {database(rows)}")
    finally:
        admin.close()
    shutil.rmtree(archive_folder(rows), ignore_errors=True)


def prepare(rows: int) -> Prepared:
    """A fresh database and archive holding ``rows`` predictions (the same values in both).

    Per 500,000 rows: values drawn (seeded per chunk), one CSV of the writer's rows loaded with
    ``LOAD DATA``, the same rows put into the archive as the writer's batch objects (100,000 rows
    each, split at day boundaries); then each day compacted by the archive's own compaction. The
    rows are built from arrays (Python builds one CSV line per row, nothing more), and the first
    chunk is checked equal to what the writer's functions build for the same events.
    """
    from archive_bench import FolderS3

    from sml.archive.layout import Partition
    from sml.archive.store import ArchiveLocation, compact_partition
    from sml.core.db import apply_migrations, create_db_engine

    drop(rows)
    admin = pymysql.connect(**MYSQL_SERVER, autocommit=True)
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {database(rows)} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    finally:
        admin.close()
    engine = create_db_engine(_url(rows))
    apply_migrations(engine)
    engine.dispose()
    s3, location = FolderS3(archive_folder(rows) / "s3"), ArchiveLocation(BUCKET, PREFIX)
    seconds = {"generate": 0.0, "load": 0.0, "archive": 0.0, "compact": 0.0}
    work = archive_folder(rows) / "csv"
    work.mkdir(parents=True, exist_ok=True)
    days = set()
    for first in range(0, rows, LOAD_CHUNK):
        started = time.perf_counter()
        chunk = Chunk.draw(first, min(rows, first + LOAD_CHUNK), rows)
        if first == 0:
            path = work / "chunk.csv"
        chunk.write_csv(path)
        if first == 0:
            chunk.check_against_the_writer(path, 100)
        seconds["generate"] += time.perf_counter() - started
        started = time.perf_counter()
        load_csv(database(rows), path)
        path.unlink()
        seconds["load"] += time.perf_counter() - started
        started = time.perf_counter()
        days.update(chunk.archive(s3, location))
        seconds["archive"] += time.perf_counter() - started
        print(f"prepare: {first + chunk.count:,} of {rows:,} rows ({', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())})", flush=True)
    started = time.perf_counter()
    for day in sorted(days):
        compact_partition(s3, location, Partition("predictions", day, MODEL_NAME), memory_limit="512MB")
    seconds["compact"] = time.perf_counter() - started
    connection = pymysql.connect(**MYSQL_SERVER, database=database(rows), autocommit=True)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE TABLE {_MARKER} (rows_loaded BIGINT NOT NULL)")
            cursor.execute(f"INSERT INTO {_MARKER} VALUES (%s)", (rows,))
    finally:
        connection.close()
    shutil.rmtree(work, ignore_errors=True)
    (archive_folder(rows) / "complete.json").write_text(json.dumps({"rows": rows, "seconds": seconds, "format": DATA_FORMAT}))
    return Prepared(rows, seconds)


def load_csv(name: str, path: Path) -> None:
    """``LOAD DATA INFILE`` (read by the server itself, which is faster than pymysql sending the file) of a CSV of ``predictions`` rows."""
    loader = pymysql.connect(**MYSQL_SERVER, database=name, charset="utf8mb4", autocommit=True)
    try:
        with loader.cursor() as cursor:
            cursor.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00'")
            cursor.execute(
                "LOAD DATA INFILE %s INTO TABLE predictions CHARACTER SET utf8mb4 "
                "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'",
                (str(path),),
            )
    finally:
        loader.close()


@dataclass(frozen=True)
class Chunk:
    """Predictions ``first`` to ``first + count`` (excluded) of a window of ``rows``, as arrays."""

    first: int
    rows: int
    values: np.ndarray
    moments: np.ndarray
    ids: list[str]
    probabilities: np.ndarray
    """``(count, 2)``: benign, malignant (the malignant one a logistic of feature 1, which decides the class)."""

    @property
    def count(self) -> int:
        return len(self.values)

    @classmethod
    def draw(cls, first: int, last: int, rows: int) -> Chunk:
        values = np.random.default_rng([11, first]).normal(size=(last - first, len(FEATURE_NAMES)))
        values[:, 0] += 0.3
        step_us = WINDOW // timedelta(microseconds=1) / rows
        start = np.datetime64((WINDOW_END - WINDOW).replace(tzinfo=None), "us")
        moments = start + np.round(np.arange(first, last) * step_us).astype("timedelta64[us]")
        milliseconds = moments.astype("datetime64[ms]").astype(np.int64).tolist()
        # UUIDv7 as the writer's ids (48-bit Unix milliseconds, version 7, variant 10), the row's
        # number in the random bits: unique, and ascending as the writer's are.
        hexes = [f"{ms:012x}7000{0x8000000000000000 | index:016x}" for ms, index in zip(milliseconds, range(first, last))]
        ids = [f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" for h in hexes]
        malignant = 1.0 / (1.0 + np.exp(-2.0 * values[:, 1]))
        return cls(first, rows, values, moments, ids, np.column_stack([1.0 - malignant, malignant]))

    def labels(self) -> np.ndarray:
        return np.where(self.values[:, 1] > 0, '"malignant"', '"benign"')

    def write_csv(self, path: Path) -> None:
        """The ``predictions`` rows as CSV for ``LOAD DATA`` (:func:`load_csv`'s format), written by DuckDB.

        DuckDB formats a double as the shortest text that reads back to it, as the writer's JSON
        does, so the database holds exactly the values the archive holds.
        """
        import duckdb
        import pyarrow as pa

        columns = {"i": pa.array(np.arange(self.first, self.first + self.count, dtype=np.int64)), "t": pa.array(self.moments)}
        columns.update({name: pa.array(self.values[:, index]) for index, name in enumerate(FEATURE_NAMES)})
        columns.update({"p_benign": pa.array(self.probabilities[:, 0]), "p_malignant": pa.array(self.probabilities[:, 1])})
        frame = pa.table(columns)  # noqa: F841 - read by DuckDB by name
        features = " || ',' || ".join(f"'\"{name}\":' || {name}::VARCHAR" for name in FEATURE_NAMES)
        milliseconds = "(epoch_us(t) // 1000)"  # epoch_ms rounds; the UUIDv7 time is truncated
        identifier = (
            f"printf('%08x-%04x-7000-%04x-%012x', {milliseconds} >> 16, {milliseconds} & 65535, 32768 | (i >> 48), i & 281474976710655)"
        )
        stored = WINDOW_END.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        connection = duckdb.connect(config={"threads": 1})
        try:
            connection.execute("SET enable_progress_bar = false")
            connection.execute(
                f"COPY (SELECT {identifier}, 1, '{MODEL_NAME}', 'v1', strftime(t, '%Y-%m-%d %H:%M:%S.%f'), "
                f"CASE WHEN feature_01 > 0 THEN '\"malignant\"' ELSE '\"benign\"' END, "
                f"'{{\"benign\":' || p_benign::VARCHAR || ',\"malignant\":' || p_malignant::VARCHAR || '}}', '{{' || {features} || '}}', '{stored}' "
                f"FROM frame ORDER BY i) TO '{path}' (FORMAT csv, HEADER false, DELIMITER ',', QUOTE '\"', ESCAPE '\"', NULLSTR '\\N')"
            )
        finally:
            connection.close()

    def table(self, rows: slice) -> Any:
        """The archive table of ``rows`` of the chunk, as :func:`sml.archive.parquet.prediction_table` builds it."""
        import pyarrow as pa

        from sml.archive.layout import feature_column, probability_column
        from sml.archive.parquet import PREDICTION_COLUMNS, TIMESTAMP, _metadata

        count = len(self.ids[rows])
        stored = pa.array(np.full(count, np.datetime64(WINDOW_END.replace(tzinfo=None), "us"))).cast(TIMESTAMP)
        columns = {
            "prediction_id": pa.array(self.ids[rows], pa.string()),
            "schema_version": pa.array(np.ones(count, np.int16)),
            "model_name": pa.array([MODEL_NAME] * count, pa.string()),
            "model_version": pa.array(["v1"] * count, pa.string()),
            "predicted_at": pa.array(self.moments[rows]).cast(TIMESTAMP),
            "prediction": pa.array(self.labels()[rows].tolist(), pa.string()),
            "stored_at": stored,
        }
        assert list(columns) == PREDICTION_COLUMNS.names
        arrays = [*columns.values(), *(pa.array(self.probabilities[rows, index]) for index in range(len(CLASSES)))]
        arrays += [pa.array(self.values[rows, index]) for index in range(len(FEATURE_NAMES))]
        names = [*columns, *(probability_column(name) for name in CLASSES), *(feature_column(name) for name in FEATURE_NAMES)]
        return pa.Table.from_arrays(arrays, names=names).replace_schema_metadata(_metadata([]))

    def archive(self, s3: Any, location: Any) -> set[Any]:
        """Put the chunk as the writer's archive step would (one object per day and 100,000 rows); the days written."""
        import hashlib

        from sml.archive.layout import Partition
        from sml.archive.parquet import to_parquet_bytes

        days = self.moments.astype("datetime64[D]")
        written = set()
        for start in range(0, self.count, ARCHIVE_BATCH):
            stop = min(self.count, start + ARCHIVE_BATCH)
            cuts = [start, *(start + np.flatnonzero(days[start + 1 : stop] != days[start : stop - 1]) + 1).tolist(), stop]
            for low, high in zip(cuts, cuts[1:]):
                day = days[low].astype(object)
                digest = hashlib.sha256(f"{self.ids[low]}..{self.ids[high - 1]}".encode()).hexdigest()[:16]
                key = f"{Partition('predictions', day, MODEL_NAME).folder(location.prefix)}batch,v1,{WINDOW_END:%Y%m%dT%H%M%S%f}Z,{digest}.parquet"
                s3.put_object(Bucket=location.bucket, Key=key, Body=to_parquet_bytes(self.table(slice(low, high))))
                written.add(day)
        return written

    def check_against_the_writer(self, path: Path, count: int) -> None:
        """The first ``count`` rows as the writer's functions build them: the same CSV values and archive table."""
        import msgspec

        from sml.archive.parquet import prediction_table
        from sml.core.events import build_prediction_event
        from sml.writer.batch import prediction_row

        written = [
            prediction_row(
                build_prediction_event(
                    model_name=MODEL_NAME, model_version="v1", features=dict(zip(FEATURE_NAMES, self.values[index].tolist())),
                    prediction=msgspec.json.decode(str(self.labels()[index])), probabilities=dict(zip(CLASSES, self.probabilities[index].tolist())),
                    predicted_at=self.moments[index].astype(object).replace(tzinfo=UTC),
                ),
                stored_at=WINDOW_END,
            )
            for index in range(count)
        ]  # fmt: skip
        for row in written:
            row["prediction_id"] = None
        ours = prediction_table(written).drop_columns(["prediction_id"])
        assert ours.equals(self.table(slice(0, count)).drop_columns(["prediction_id"]), check_metadata=True), "archive table differs from the writer's"
        with path.open(encoding="utf-8") as handle:
            lines = [line for _, line in zip(range(count), csv.reader(handle))]
        for line, row in zip(lines, written):
            assert msgspec.json.decode(line[7]) == msgspec.json.decode(row["features"]) and line[5] == row["prediction"], line
            assert msgspec.json.decode(line[6]) == msgspec.json.decode(row["probabilities"]), (line[6], row["probabilities"])
            assert line[4] == row["predicted_at"].isoformat(sep=" ", timespec="microseconds"), (line[4], row["predicted_at"])
        assert [line[0] for line in lines] == self.ids[:count], (lines[0][0], self.ids[0])


def child(source: str, size: int, rows: int, quality: bool) -> None:
    """In a fresh process: the weekly run over the last ``size`` of ``rows`` predictions; prints one JSON line."""
    import resource

    import boto3
    from moto import mock_aws

    from sml.core.db import create_db_engine
    from sml.monitoring.job import DriftJobConfig, run_drift_job

    mock = mock_aws()
    mock.start()
    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench")
    s3, sns = session.client("s3"), session.client("sns")
    s3.create_bucket(Bucket="sml-bench-scale")
    config = DriftJobConfig(bucket="sml-bench-scale", window_length=window_length(size, rows), topic_arn=sns.create_topic(Name="sml-bench-scale")["TopicArn"])
    if not quality:
        config = DriftJobConfig(bucket=config.bucket, window_length=config.window_length, topic_arn=config.topic_arn, quality=None)
    manifest = calibrated_manifest()
    engine = create_db_engine(_url(rows))
    window_source = None
    if source == "duckdb":  # imported only here: the database path's process does not load pyarrow and DuckDB
        from archive_bench import FolderS3

        from sml.archive.sources import ArchiveWindowSource
        from sml.archive.store import ArchiveLocation

        window_source = ArchiveWindowSource(FolderS3(archive_folder(rows) / "s3"), ArchiveLocation(BUCKET, PREFIX))
    rss_before = _memory_mb("VmRSS")
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    result = run_drift_job(config, manifest, engine=engine, s3_client=s3, sns_client=sns, window_end=WINDOW_END, window_source=window_source)
    seconds = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    estimated = None if result.run.quality is None else result.run.quality.estimated
    ks = {item.feature: [item.statistic, item.p_value, item.n_current] for item in result.run.results if item.test == "ks" and item.feature in KS_FEATURES}
    print(json.dumps({
        "seconds": seconds,
        "cpu_s": cpu_after.ru_utime + cpu_after.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime,
        "peak_rss_mb": _memory_mb("VmHWM"),
        "rss_before_mb": rss_before,
        "rows": result.run.current_rows,
        "drifted": list(result.run.drifted_features),
        "ks": ks,
        "cbpe": None if estimated is None else {"n": estimated.n_predictions, "expected_confusion": estimated.expected_confusion},
    }))  # fmt: skip


def calibrated_manifest() -> Any:
    """drift_bench's manifest with a CBPE calibrator of the malignant class (an isotonic map of 101
    thresholds, as registration fits on a held-out split), so the run estimates quality from the probabilities."""
    import dataclasses

    from sml.lifecycle.calibration import LABEL_FREE_KEY, Calibrator

    manifest = bench_manifest()
    thresholds = np.linspace(0.0, 1.0, 101)
    calibrator = Calibrator(CLASSES, {CLASSES[1]: (tuple(thresholds.tolist()), tuple((0.02 + 0.96 * thresholds**1.1).tolist()))}, "bench", 10_000)
    return dataclasses.replace(manifest, extra={**manifest.extra, LABEL_FREE_KEY: calibrator.to_json()})


def _memory_mb(field: str) -> float:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through fork and exec.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def run_child(source: str, size: int, rows: int, *, quality: bool = True) -> dict[str, Any]:
    """:func:`child` in a fresh process; its figures."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", source, str(size), str(rows), "quality" if quality else "no-quality"]
    completed = subprocess.run(command, check=False, cwd=REPOSITORY, capture_output=True, text=True, timeout=3600)
    if completed.returncode != 0:
        raise RuntimeError(f"weekly run from {source} over {size:,} rows failed: {completed.stderr.strip()[-3000:]}")
    figures = {"source": source, "size": size, "quality": quality, **json.loads(completed.stdout.strip().splitlines()[-1])}
    print(f"weekly run: {json.dumps(figures)}", file=sys.stderr, flush=True)  # as it comes: a 10M run takes minutes
    return figures


def scipy_ks(size: int, rows: int) -> dict[str, list[float]]:
    """``scipy.stats.ks_2samp`` of the training reference against the window's raw values read back from the database, per feature of :data:`KS_FEATURES`."""
    import msgspec
    from scipy.stats import ks_2samp

    window = window_length(size, rows)
    manifest = bench_manifest()
    decoder = msgspec.json.Decoder(dict[str, float])
    values: dict[str, list[float]] = {name: [] for name in KS_FEATURES}
    connection = pymysql.connect(**MYSQL_SERVER, database=database(rows), charset="utf8mb4", cursorclass=pymysql.cursors.SSCursor)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT features FROM predictions WHERE model_name = %s AND predicted_at >= %s AND predicted_at < %s",
                (MODEL_NAME, (WINDOW_END - window).replace(tzinfo=None), WINDOW_END.replace(tzinfo=None)),
            )
            for (text,) in cursor:
                features = decoder.decode(text)
                for name in KS_FEATURES:
                    values[name].append(features[name])
    finally:
        connection.close()
    out = {}
    for name in KS_FEATURES:
        outcome = ks_2samp(np.asarray(manifest.reference.features[name].sorted_values), np.asarray(values[name]))
        out[name] = [float(outcome.statistic), float(outcome.pvalue), len(values[name])]
    return out


def sizes_of(quick: bool) -> tuple[int, tuple[int, int, int]]:
    """The rows loaded and the three window sizes measured."""
    return (QUICK_ROWS, (10_000, 100_000, 300_000)) if quick else (FULL_ROWS, (100_000, 1_000_000, 10_000_000))


WEEKLY_PARTS = ("database", "archive", "archive-no-quality")


def measure(quick: bool, parts: Sequence[str] = WEEKLY_PARTS, *, keep: bool = False) -> dict[str, Any]:
    """Load the window unless an earlier :func:`prepare` left it, run every measured process, drop it unless ``keep``.

    ``database``: the weekly run from MariaDB at the three sizes, and scipy's KS on the middle one;
    ``archive``: the weekly run with the drift summaries from DuckDB at the two larger sizes (and
    from MariaDB at the largest, unless the database part ran just before); ``archive-no-quality``: both sources on the largest window with
    model quality off. Each part's comparisons use its own runs only.
    """
    rows, sizes = sizes_of(quick)
    figures: dict[str, Any] = {"rows": rows, "sizes": sizes, "uptime_start": os.getloadavg()}
    if is_prepared(rows):
        figures["load"] = {"prepared before": True, **json.loads((archive_folder(rows) / "complete.json").read_text())["seconds"]}
    else:
        figures["load"] = {"prepared before": False, **prepare(rows).seconds}
    runs: list[dict[str, Any]] = []
    try:
        if "database" in parts:
            runs += [{"part": "database", **run_child("database", size, rows)} for size in sizes]
            figures["scipy_ks"] = scipy_ks(sizes[1], rows)
        if "archive" in parts:
            # The database's run of the largest window, when the database part did not just measure it.
            plan = [("duckdb", sizes[1]), *([] if "database" in parts else [("database", sizes[2])]), ("duckdb", sizes[2])]
            runs += [{"part": "archive", **run_child(source, size, rows)} for source, size in plan]
        if "archive-no-quality" in parts:
            runs += [{"part": "archive-no-quality", **run_child(source, sizes[2], rows, quality=False)} for source in ("database", "duckdb")]
    finally:
        if not keep:
            drop(rows)
    figures["runs"] = runs
    figures["uptime_end"] = os.getloadavg()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--prepare", type=int, metavar="ROWS")
    parser.add_argument("--drop", type=int, metavar="ROWS")
    parser.add_argument("--child", nargs=4, metavar=("SOURCE", "SIZE", "ROWS", "QUALITY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        source, size, rows, quality = args.child
        child(source, int(size), int(rows), quality == "quality")
        return
    if args.drop:
        drop(args.drop)
    if args.prepare:
        prepared = prepare(args.prepare)
        print(json.dumps({"rows": prepared.rows, "seconds": prepared.seconds}))


if __name__ == "__main__":
    main()
