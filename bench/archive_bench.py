"""The event archive: writer throughput with it on vs off, Parquet bytes per event, and the weekly
window read from the archive with DuckDB vs from MariaDB.

1. Writer: :func:`sml.writer.batch.write_batch` in batches of 500 (the deployed size) into
   MariaDB (database ``sml_bench``), without and with the writer Lambda's archive step
   (:func:`sml.archive.landing.land_acknowledged`: the batch's acknowledged records landed in
   one object after the commit, as ``functions/writer/app.py`` does), measured in whole turns
   (best turn kept) and alternating every batch (see :func:`writer_figures`). Then the archive
   function's conversion of what one turn landed (:func:`sml.archive.landing.convert_landing`:
   parsed again, built into the Parquet objects, put, the landing object deleted), in events/s
   and CPU per batch, against the writer's rate without the archive: how many writers one
   converter keeps up with. The step puts into two
   S3s, each against the same archive-off baseline of the same run: moto in-process (mock_aws,
   as the tests use it: moto's S3 server runs its Python on the writer's own CPU and GIL) and
   the local stack's S3 endpoint (fauxqs, as ``sml up`` starts it) in a process of its own on
   127.0.0.1, reached over HTTP by the writer's botocore client, as MariaDB is reached. The
   second is the issue's figure: on AWS, S3 is another machine, as the database is another
   process in both variants here; the first charges S3's server work to the writer.
2. Bytes: the objects those batches wrote, per event (30 float features, the writer bench's
   events), and the same day after compaction (one object).
3. Window: the drift bench's window (N predictions × 20 numeric features, ``sml_bench_drift``)
   read into the weekly run's summaries, in a fresh process each: from MariaDB
   (:func:`sml.monitoring.windows.read_window_summaries`) and from the archive
   (:func:`sml.archive.sources.archive_window_summaries`: the window's compacted day objects
   fetched, DuckDB streaming record batches into the same summariser). The archive sits in a
   local folder behind an S3-shaped client (list, download), so the figures are DuckDB's and
   the summariser's, not a network's. Peak memory is ``VmHWM`` (imports included).

Run alone: ``python bench/archive_bench.py [--quick] [--part writer|window] [--database NAME]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from statistics import median
from typing import Any

from common import REPOSITORY, BenchReport, Comparison, print_report, ratio_at_least, ratio_at_most

BENCHMARK = "archive"
BATCH = 500
MIN_THROUGHPUT_RATIO = 0.8
MAX_PEAK_MB = 512


class FolderS3:
    """The S3 calls the archive makes (list with a paginator, put, get, download, upload, delete), on a local folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, bucket: str, key: str) -> Path:
        return self.root / bucket / key

    def put_object(self, Bucket: str, Key: str, Body: bytes, **_: Any) -> dict[str, Any]:  # noqa: N803 - boto3's names
        path = self._path(Bucket, Key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(Body)
        return {}

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        import io

        return {"Body": io.BytesIO(self._path(Bucket, Key).read_bytes())}

    def download_file(self, bucket: str, key: str, filename: str) -> None:
        shutil.copyfile(self._path(bucket, key), filename)

    def upload_file(self, filename: str, bucket: str, key: str) -> None:
        path = self._path(bucket, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(filename, path)

    def delete_objects(self, Bucket: str, Delete: dict[str, Any]) -> dict[str, Any]:  # noqa: N803
        for item in Delete["Objects"]:
            self._path(Bucket, item["Key"]).unlink(missing_ok=True)
        return {}

    def get_paginator(self, name: str) -> Any:
        assert name == "list_objects_v2"
        return self

    def paginate(self, Bucket: str, Prefix: str, Delimiter: str | None = None, StartAfter: str = "") -> Any:  # noqa: N803
        """One page of the keys under ``Prefix`` that sort after ``StartAfter`` (as S3 lists them), or their common prefixes up to ``Delimiter``."""
        base = self.root / Bucket
        keys = sorted(str(path.relative_to(base)) for path in base.rglob("*") if path.is_file() and str(path.relative_to(base)).startswith(Prefix))
        keys = [key for key in keys if key > StartAfter]
        if Delimiter:
            prefixes = sorted({Prefix + key[len(Prefix) :].split(Delimiter, 1)[0] + Delimiter for key in keys if Delimiter in key[len(Prefix) :]})
            return [{"CommonPrefixes": [{"Prefix": prefix} for prefix in prefixes]}]
        return [{"Contents": [{"Key": key, "Size": (base / key).stat().st_size} for key in keys]}]


# --------------------------------------------------------------------------------------------
# 1 and 2: the writer


WRITER_VARIANTS = ("archive off", "archive on, S3 in-process", "archive on, S3 in its own process")
"""The writer variants: no archive step; the step putting into moto in this process (mock_aws:
moto's S3 runs its Python on the writer's own CPU and GIL); the step putting over HTTP into the
local stack's S3 endpoint (fauxqs, :class:`sml.local.aws_endpoint.FauxqsServer`) on 127.0.0.1,
a process of its own as MariaDB is and as S3 is on AWS."""


def _process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (``/proc/<pid>/stat``)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Rates = dict[str, float]


def writer_figures(events: int, turns: int, database: str = "sml_bench") -> tuple[Rates, Rates, Rates, Rates, float, Rates]:
    """Events/s of the writer in each of :data:`WRITER_VARIANTS`, measured two ways; writer CPU per
    batch; bytes per event (landing objects, Parquet batch objects, compacted); the S3 server's
    CPU per batch; the conversion of one turn's landing objects (events/s and CPU ms per batch,
    for each S3).

    - whole turns: each variant stores all ``events`` in turn (an emptied table each time; each
      variant first in one turn), best turn kept (the method of the first runs; a burst of load
      from other processes can land on one variant's turn);
    - batch by batch: each variant stores its own events (same shape, another seed) into the same
      table, the variants alternating every batch (each going first in turn), so all meet the
      same load and the same table size; events over the summed seconds of every batch. Process
      CPU time per batch (every thread of the writer's process, moto's in-process S3 included;
      not MariaDB's nor the S3 process's) is summed alongside, and the S3 process's CPU per batch
      read from ``/proc`` over the whole alternation (it idles while the other variants run).

    Every variant is warmed by one batch of other events first (a client's first request), as in
    a warm container. The conversion is warmed by converting the warm-up batch first (pyarrow's
    first Parquet write).
    """
    import boto3
    from moto import mock_aws
    from moto.core.models import botocore_stubber
    from writer_bench import bench_engine, sqs_records

    from sml.archive.landing import convert_landing, land_acknowledged, landing_prefix
    from sml.archive.layout import Partition
    from sml.archive.store import ArchiveLocation, compact_partition, list_partition
    from sml.core.aws import DEFAULT_CONFIG
    from sml.local.aws_endpoint import FauxqsServer
    from sml.writer.batch import write_batch

    off, in_process, own_process = WRITER_VARIANTS
    rates: dict[str, float] = dict.fromkeys(WRITER_VARIANTS, 0.0)
    sizes: dict[str, float] = {}
    conversion: dict[str, float] = {}
    server = FauxqsServer(host="127.0.0.1", port=0)
    try:
        with mock_aws(), bench_engine(database) as engine:
            clients = {
                in_process: boto3.client("s3", region_name="us-east-1", config=DEFAULT_CONFIG),
                own_process: boto3.client(
                    "s3", region_name="us-east-1", endpoint_url=server.url, aws_access_key_id="local", aws_secret_access_key="local", config=DEFAULT_CONFIG
                ),
            }
            # mock_aws hooks every client's requests to match them against moto's URLs (~0.2 ms a put);
            # the deployed writer has no such hook.
            clients[own_process].meta.events.unregister("before-send", botocore_stubber)

            def step(name: str) -> tuple[Any, ArchiveLocation]:
                """What the writer Lambda does with a batch (functions/writer/app.py): store it, then land what it acknowledged."""
                location = ArchiveLocation(f"sml-bench-{uuid.uuid4().hex[:12]}", "archive/")
                if name != off:
                    clients[name].create_bucket(Bucket=location.bucket)

                def store(batch: list[tuple[str, str]]) -> None:
                    stored_at = datetime.now(timezone.utc)
                    outcome = write_batch(engine, batch, stored_at=stored_at)
                    if name != off:
                        land_acknowledged(clients[name], location, outcome.events, (failure.message_id for failure in outcome.failures), stored_at)

                return store, location

            warm = sqs_records(BATCH * len(WRITER_VARIANTS), seed=97)
            records = sqs_records(events)
            for turn in range(turns):
                for name in WRITER_VARIANTS[turn % len(WRITER_VARIANTS) :] + WRITER_VARIANTS[: turn % len(WRITER_VARIANTS)]:
                    with engine.begin() as connection:
                        connection.exec_driver_sql("TRUNCATE TABLE predictions")
                    store, location = step(name)
                    index = WRITER_VARIANTS.index(name)
                    store(warm[index * BATCH : (index + 1) * BATCH])
                    if name != off and turn == 0:  # the warm-up batch converted alone first: pyarrow's first Parquet write
                        convert_landing(clients[name], location)
                    started = time.perf_counter()
                    for start in range(0, len(records), BATCH):
                        store(records[start : start + BATCH])
                    rates[name] = max(rates[name], len(records) / (time.perf_counter() - started))
                    if name != off and turn == 0:
                        s3 = clients[name]
                        landed = s3.list_objects_v2(Bucket=location.bucket, Prefix=landing_prefix(location))["Contents"]
                        server_before = _process_cpu_seconds(server.process.pid)
                        started, started_cpu = time.perf_counter(), time.process_time()
                        converted = convert_landing(s3, location)
                        wall, used = time.perf_counter() - started, time.process_time() - started_cpu
                        if converted.failures or converted.events != events:
                            raise RuntimeError(f"the conversion did not convert every landed event: {converted.summary()}")
                        conversion[f"{name}: events/s"] = events / wall
                        conversion[f"{name}: CPU ms per batch"] = used / (events / BATCH) * 1000
                        if name == own_process:
                            conversion[f"{name}: S3 process CPU ms per batch"] = (_process_cpu_seconds(server.process.pid) - server_before) / (events / BATCH) * 1000
                        if name == in_process:
                            sizes["landing objects (MessagePack, until converted)"] = sum(item["Size"] for item in landed) / events
                            partition = Partition("predictions", datetime.now(timezone.utc).date(), "breast-cancer")
                            objects = list_partition(s3, location, partition)
                            sizes["batch objects of 500 events"] = (sum(item.size for item in objects) - objects[0].size) / events
                            compact_partition(s3, location, partition)
                            sizes["compacted day"] = sum(item.size for item in list_partition(s3, location, partition)) / (events + BATCH)

            with engine.begin() as connection:
                connection.exec_driver_sql("TRUNCATE TABLE predictions")
            own = {name: sqs_records(events * turns, seed=11 + index) for index, name in enumerate(WRITER_VARIANTS)}
            steps = {name: step(name)[0] for name in WRITER_VARIANTS}
            for index, name in enumerate(WRITER_VARIANTS):
                steps[name](warm[index * BATCH : (index + 1) * BATCH])
            seconds = dict.fromkeys(WRITER_VARIANTS, 0.0)
            cpu = dict.fromkeys(WRITER_VARIANTS, 0.0)
            started_server = _process_cpu_seconds(server.process.pid)  # idle while the other variants run
            for number, start in enumerate(range(0, events * turns, BATCH)):
                shift = number % len(WRITER_VARIANTS)
                for name in WRITER_VARIANTS[shift:] + WRITER_VARIANTS[:shift]:
                    started, started_cpu = time.perf_counter(), time.process_time()
                    steps[name](own[name][start : start + BATCH])
                    seconds[name] += time.perf_counter() - started
                    cpu[name] += time.process_time() - started_cpu
            server_cpu = _process_cpu_seconds(server.process.pid) - started_server
    finally:
        server.stop()
    batches = events * turns / BATCH
    interleaved = {name: events * turns / seconds[name] for name in WRITER_VARIANTS}
    cpu_ms = {name: cpu[name] / batches * 1000 for name in WRITER_VARIANTS}
    return rates, interleaved, cpu_ms, sizes, server_cpu / batches * 1000, conversion


# --------------------------------------------------------------------------------------------
# 3: the window


def build_archive(folder: Path, database: str) -> None:
    """The window's rows, read back from the bench database, archived and compacted per day under ``folder``."""
    import sqlalchemy as sa
    from drift_bench import MODEL_NAME
    from common import MYSQL_SERVER

    from sml.archive.layout import Partition
    from sml.archive.store import ArchiveLocation, archive_rows, compact_partition, partitions
    from sml.core.db import PREDICTIONS, create_db_engine

    s3 = FolderS3(folder)
    location = ArchiveLocation("bench", "archive/")
    url = sa.URL.create("mysql+pymysql", username=MYSQL_SERVER["user"], host=MYSQL_SERVER["host"], port=MYSQL_SERVER["port"], database=database)
    engine = create_db_engine(url)
    days = set()
    with engine.connect() as connection:
        result = connection.execution_options(stream_results=True, yield_per=50_000).execute(sa.select(PREDICTIONS).order_by(PREDICTIONS.c.predicted_at))
        for chunk in result.partitions():
            rows = [dict(row._mapping) for row in chunk]
            days.update(row["predicted_at"].date() for row in rows)
            archive_rows(s3, location, predictions=rows)
    engine.dispose()
    for day in sorted(days):
        compact_partition(s3, location, Partition("predictions", day, MODEL_NAME), memory_limit="512MB")
    assert all(item for item in partitions(s3, location, "predictions", min(days), max(days), [MODEL_NAME]))


def child(variant: str, folder: str, database: str) -> None:
    """In a fresh process: read the window into summaries from ``variant``, print seconds and peak memory."""
    import sqlalchemy as sa
    from common import MYSQL_SERVER
    from drift_bench import FEATURE_NAMES, MODEL_NAME, WINDOW, WINDOW_END, bench_manifest

    from sml.archive.sources import archive_window_summaries
    from sml.archive.store import ArchiveLocation
    from sml.core.db import create_db_engine
    from sml.monitoring.summaries import SummaryReference
    from sml.monitoring.windows import TimeWindow, read_window_summaries

    manifest = bench_manifest()
    references = [SummaryReference.from_manifest(manifest)]
    window = TimeWindow.ending_at(WINDOW_END, WINDOW)
    engine = create_db_engine(
        sa.URL.create("mysql+pymysql", username=MYSQL_SERVER["user"], host=MYSQL_SERVER["host"], port=MYSQL_SERVER["port"], database=database)
    )
    started = time.perf_counter()
    if variant == "database":
        summaries = read_window_summaries(engine, MODEL_NAME, window, manifest.features, references)
    else:
        summaries = archive_window_summaries(FolderS3(Path(folder)), ArchiveLocation("bench", "archive/"), MODEL_NAME, window, manifest.features, references)
    seconds = time.perf_counter() - started
    cells = int(sum(summaries[0].features[name].cells.sum() for name in FEATURE_NAMES))
    print(json.dumps({"seconds": seconds, "peak_rss_mb": _memory_mb("VmHWM"), "rows": summaries[0].n_rows, "cells": cells}))


def _memory_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def window_figures(rows: int, repeats: int) -> dict[str, list[dict[str, Any]]]:
    from drift_bench import DATABASE, drift_database

    runs: dict[str, list[dict[str, Any]]] = {"database": [], "duckdb": []}
    with tempfile.TemporaryDirectory(prefix="sml-bench-archive-") as folder, drift_database(rows, Path(folder)):
        build_archive(Path(folder) / "s3", DATABASE)
        for _ in range(repeats):
            for variant in runs:
                completed = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--child", variant, str(Path(folder) / "s3"), DATABASE],
                    check=False, cwd=REPOSITORY, capture_output=True, text=True, timeout=1800,
                )
                if completed.returncode != 0:
                    raise RuntimeError(f"archive benchmark variant {variant!r} failed: {completed.stderr.strip()[-2000:]}")
                runs[variant].append(json.loads(completed.stdout.strip().splitlines()[-1]))
    return runs


def run(quick: bool, out_dir: Path, part: str = "all", database: str = "sml_bench") -> BenchReport:
    events = 5_000 if quick else 20_000
    rows = 100_000 if quick else 1_000_000
    comparisons: list[Comparison] = []
    details: list[dict[str, Any]] = []
    if part in ("all", "writer"):
        turns = 2 if quick else 3
        rates, interleaved, cpu_ms, sizes, server_cpu_ms, conversion = writer_figures(events, turns, database)
        off = WRITER_VARIANTS[0]
        for name in WRITER_VARIANTS[1:]:
            whole, alternating = (f"writer, {count:,} events, batch {BATCH}, {name}" for count in (events, events * turns))
            comparisons += [
                ratio_at_least(BENCHMARK, f"{whole} (best of {turns} whole turns)", rates[name], off, rates[off], "events/s", MIN_THROUGHPUT_RATIO),
                ratio_at_least(
                    BENCHMARK, f"{alternating} (alternating every batch)", interleaved[name], off, interleaved[off], "events/s", MIN_THROUGHPUT_RATIO
                ),
            ]
        details += [
            {"measure": f"writer process CPU per batch of {BATCH}, alternating every batch, {name}", "value": round(value, 1), "unit": "ms"}
            for name, value in cpu_ms.items()
        ]
        details.append({"measure": f"S3 process (fauxqs) CPU per batch of {BATCH}, alternating every batch", "value": round(server_cpu_ms, 1), "unit": "ms"})
        details += [{"measure": f"bytes per event, {name}", "value": round(value, 1)} for name, value in sizes.items()]
        details += [{"measure": f"conversion of one turn's landing objects, {name}", "value": round(value, 1)} for name, value in conversion.items()]
        for name in WRITER_VARIANTS[1:]:
            # Not a goal of its own: how many writers (archive off) one converter keeps up with.
            details.append({
                "measure": f"conversion events/s over the writer's events/s without the archive (whole turns), {name}",
                "value": round(conversion[f"{name}: events/s"] / rates[off], 2),
            })
    if part in ("all", "window"):
        runs = window_figures(rows, repeats=1 if quick else 2)
        database, duckdb = (median(run["seconds"] for run in runs[name]) for name in ("database", "duckdb"))
        peak = max(run["peak_rss_mb"] for run in runs["duckdb"])
        if {run["cells"] for run in runs["database"]} != {run["cells"] for run in runs["duckdb"]}:
            raise RuntimeError(f"the two sources counted different windows: {runs}")
        comparisons += [
            ratio_at_most(BENCHMARK, f"window of {rows:,} predictions × 20 features into summaries, DuckDB over the archive", duckdb, "MariaDB", database, "s", 1.0),
            Comparison(BENCHMARK, f"window of {rows:,}, DuckDB peak RSS", peak, "goal", MAX_PEAK_MB, "MiB", f"< {MAX_PEAK_MB} MiB", peak < MAX_PEAK_MB),
        ]
        details += [
            {"measure": f"window read, {name}", **{key: round(value, 3) if isinstance(value, float) else value for key, value in run.items()}}
            for name, values in runs.items() for run in values
        ]
    return BenchReport(
        name=BENCHMARK, comparisons=comparisons, details=details,
        method=[line.strip() for line in (__doc__ or "").split("\n\n")[1:3]],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--part", choices=("all", "writer", "window"), default="all", help="run the writer part (1, 2) or the window part (3) alone")
    parser.add_argument("--database", default="sml_bench", help="the writer part's database, created and dropped (default: %(default)s)")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "FOLDER", "DATABASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    print_report(run(args.quick, Path(tempfile.mkdtemp(prefix="sml-bench-")), args.part, args.database))


if __name__ == "__main__":
    main()
