"""The weekly run's window from the archive (DuckDB) gives the same summaries, so the same verdicts, as from the database."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import pytest
from archive_support import engine, new_archive, s3  # noqa: F401 - fixtures
from drift_support import FEATURES, MODEL_NAME, MODEL_VERSION, WINDOW, WINDOW_END, Traffic, build_manifest, draw_traffic, traffic_rows
from sqlalchemy.engine import Engine

from sml.archive.athena_window import AthenaWindowSource
from sml.archive.layout import Partition, days
from sml.archive.sources import archive_window_summaries
from sml.archive.store import ArchiveLocation, archive_rows, compact_partition
from sml.archive.sources import ArchiveWindowSource
from sml.core.errors import SmlError
from sml.monitoring.job import DriftJobConfig, read_drift_window, run_drift_job
from sml.monitoring.sources import DatabaseWindowSource
from sml.monitoring.summaries import SummaryReference
from sml.monitoring.windows import TimeWindow, read_window_summaries
from sml.writer.batch import insert_prediction_rows


def store_both(
    engine: Engine, s3: Any, location: ArchiveLocation, traffic: Traffic, start: datetime, end: datetime, *,
    model_name: str = MODEL_NAME, copies: int = 0, version: str = MODEL_VERSION,
) -> None:
    """``traffic`` in the table and in the archive (in batches of 100, as the writer puts them), the first ``copies`` archived twice."""
    rows = traffic_rows(traffic, start=start, end=end, model_name=model_name, version=version)
    with engine.begin() as connection:
        insert_prediction_rows(connection, rows)
    for offset in range(0, len(rows), 100):
        archive_rows(s3, location, predictions=rows[offset : offset + 100])
    if copies:
        later = [{**row, "stored_at": end + timedelta(seconds=1)} for row in rows[:copies]]
        archive_rows(s3, location, predictions=later)


@pytest.mark.parametrize("shift", [None, "mean", "category_mix", "null_spike"])
def test_database_and_archive_give_the_same_summaries_of_a_window(engine: Engine, s3: Any, shift: str | None) -> None:
    location = new_archive(s3)
    manifest = build_manifest(draw_traffic(500, seed=1))
    window = TimeWindow.ending_at(WINDOW_END, WINDOW)
    store_both(engine, s3, location, draw_traffic(700, seed=2, shift=shift), window.start, window.end, copies=30)
    store_both(engine, s3, location, draw_traffic(50, seed=3), window.start - timedelta(days=1), window.start)  # before the window
    store_both(engine, s3, location, draw_traffic(40, seed=4), window.end, window.end + timedelta(hours=5))  # from its end on
    store_both(engine, s3, location, draw_traffic(60, seed=5, shift="mean"), window.start, window.end, model_name="other-model")
    training = SummaryReference.from_manifest(manifest)
    database = read_window_summaries(engine, MODEL_NAME, window, FEATURES, [training])
    archive = archive_window_summaries(s3, location, MODEL_NAME, window, FEATURES, [training], batch_rows=128)
    assert database[0].n_rows == 700
    assert differences(archive[0].to_json(), database[0].to_json()) == []


def test_compacted_days_give_the_same_summaries_and_a_feature_no_file_has_counts_as_missing(engine: Engine, s3: Any) -> None:
    location = new_archive(s3)
    manifest = build_manifest(draw_traffic(300, seed=6))
    window = TimeWindow.ending_at(WINDOW_END, timedelta(days=2))
    traffic = draw_traffic(400, seed=7, shift="variance")
    traffic.columns.pop("nullable")
    store_both(engine, s3, location, traffic, window.start, window.end, copies=10)
    for day in days(window.start.date(), window.end.date()):
        compact_partition(s3, location, Partition("predictions", day, MODEL_NAME))
    training = SummaryReference.from_manifest(manifest)
    database = read_window_summaries(engine, MODEL_NAME, window, FEATURES, [training])
    archive = archive_window_summaries(s3, location, MODEL_NAME, window, FEATURES, [training])
    assert differences(archive[0].to_json(), database[0].to_json()) == []
    assert archive[0].features["nullable"].missing == 400


@pytest.mark.parametrize("shift", ["mean", "null_spike"])
def test_the_weekly_run_reaches_the_same_verdicts_from_the_archive_as_from_the_database(engine: Engine, s3: Any, shift: str) -> None:
    location = new_archive(s3)
    manifest = build_manifest(draw_traffic(500, seed=11))
    window = TimeWindow.ending_at(WINDOW_END, WINDOW)
    store_both(engine, s3, location, draw_traffic(600, seed=12, shift=shift), window.start, window.end, copies=25)
    config = DriftJobConfig(bucket=location.bucket, topic_arn=None)
    runs = {}
    for source in (DatabaseWindowSource(engine), ArchiveWindowSource(s3, location)):
        outcome = run_drift_job(config, manifest, engine=engine, s3_client=s3, sns_client=None, window_end=WINDOW_END, window_source=source)
        runs[source.name] = outcome.run
    verdicts = {name: [(result.feature, result.test, result.verdict, result.statistic, result.p_value) for result in run.results] for name, run in runs.items()}
    assert verdicts["duckdb"] == verdicts["database"]
    assert (runs["duckdb"].status, runs["duckdb"].current_rows) == (runs["database"].status, 600)
    assert runs["duckdb"].drifted_features == runs["database"].drifted_features != []


def test_a_window_from_the_archive_keeps_no_row_of_its_quality_pass(engine: Engine, s3: Any) -> None:
    # The labels' pass over the database counts into the quality aggregate: it held 40 bytes a row (10M rows: 400 MB) before.
    location = new_archive(s3)
    manifest = build_manifest(draw_traffic(500, seed=11))
    window = TimeWindow.ending_at(WINDOW_END, WINDOW)
    store_both(engine, s3, location, draw_traffic(600, seed=12, shift="mean"), window.start, window.end)
    observed = read_drift_window(engine, manifest, window, DriftJobConfig(bucket=location.bucket), ArchiveWindowSource(s3, location))
    sample = observed.quality_sample
    assert sample is not None and sample.aggregate is not None and sample.n_rows == 600
    assert sample.predicted_index.size == sample.probabilities.size == sample.true_index.size == 0


def test_an_empty_archive_gives_empty_summaries(s3: Any) -> None:
    location = new_archive(s3)
    manifest = build_manifest(draw_traffic(100, seed=8))
    summaries = archive_window_summaries(s3, location, MODEL_NAME, TimeWindow.ending_at(WINDOW_END, WINDOW), FEATURES, [SummaryReference.from_manifest(manifest)])
    assert summaries[0].n_rows == 0


def test_an_archived_object_duckdb_cannot_read_stops_the_window_naming_its_s3_key(s3: Any) -> None:
    location = new_archive(s3)
    manifest = build_manifest(draw_traffic(100, seed=8))
    window = TimeWindow.ending_at(WINDOW_END, WINDOW)
    archive_rows(s3, location, predictions=traffic_rows(draw_traffic(50, seed=9), start=window.start, end=window.end))
    folder = Partition("predictions", (window.end - timedelta(hours=1)).date(), MODEL_NAME).folder(location.prefix)
    broken = f"{folder}batch,{MODEL_VERSION},20250310T000000000000Z,0123456789abcdef.parquet"
    s3.put_object(Bucket=location.bucket, Key=broken, Body=b"not parquet")
    source = ArchiveWindowSource(s3, location)
    references = [SummaryReference.from_manifest(manifest)]

    for read in (lambda: source.read_window(manifest, window, references), lambda: source.read_summaries(MODEL_NAME, window, FEATURES, references)):
        with pytest.raises(SmlError) as refused:
            read()
        assert f"'{location.uri(broken)}'" in str(refused.value) and "sml-window-" not in str(refused.value)


def differences(archive: Any, database: Any, path: str = "") -> list[str]:
    """Where two summaries' JSON differ. Every count, minimum and maximum must be equal; the sums
    (``total``, ``total_squares``, for the report's moments; ``below_total``, ``above_total``
    beyond the reference's range) may differ in the last bits, as floating-point addition in
    another order does."""
    if isinstance(archive, dict) and isinstance(database, dict):
        return [found for key in set(archive) | set(database) for found in differences(archive.get(key), database.get(key), f"{path}.{key}")]
    if path.endswith((".total", ".total_squares", ".below_total", ".above_total")) and isinstance(archive, float) and isinstance(database, float):
        return [] if math.isclose(archive, database, rel_tol=1e-12) else [f"{path}: {archive!r} != {database!r}"]
    return [] if archive == database else [f"{path}: {archive!r} != {database!r}"[:300]]


def test_the_drift_function_reads_the_archive_only_when_told_where_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    from functions.drift import app
    from sml.core.settings import SettingsError

    monkeypatch.setenv("SML_TOPIC_ARN", "arn:aws:sns:us-east-1:000000000000:alerts")
    monkeypatch.setenv("SML_WINDOW_SOURCE", "duckdb")
    monkeypatch.delenv("SML_ARCHIVE_PREFIX", raising=False)
    for cached in (app.drift_settings, app.client, app.window_source):
        cached.cache_clear()
    try:
        with pytest.raises(SettingsError, match="SML_WINDOW_SOURCE: duckdb reads the event archive: set SML_ARCHIVE_PREFIX too"):
            app.window_source()
        monkeypatch.setenv("SML_ARCHIVE_PREFIX", "archive/")
        monkeypatch.setenv("SML_LABEL_HORIZON_DAYS", "3")
        app.drift_settings.cache_clear()
        source = app.window_source()
        assert isinstance(source, ArchiveWindowSource) and source.location.prefix == "archive/"
        assert source.label_horizon == timedelta(days=3)  # which label days the window's quality reads
        monkeypatch.setenv("SML_WINDOW_SOURCE", "athena")
        for cached in (app.drift_settings, app.window_source):
            cached.cache_clear()
        with pytest.raises(SettingsError, match="SML_WINDOW_SOURCE: athena reads the archive's Glue table: set SML_ATHENA_WORKGROUP and SML_ATHENA_DATABASE"):
            app.window_source()
        monkeypatch.setenv("SML_ATHENA_WORKGROUP", "sml-archive")
        monkeypatch.setenv("SML_ATHENA_DATABASE", "sml_archive")
        app.drift_settings.cache_clear()
        source = app.window_source()
        assert isinstance(source, AthenaWindowSource) and (source.target.workgroup, source.target.database) == ("sml-archive", "sml_archive")
        monkeypatch.setenv("SML_WINDOW_SOURCE", "database")
        for cached in (app.drift_settings, app.window_source):
            cached.cache_clear()
        assert app.window_source() is None
    finally:
        for cached in (app.drift_settings, app.client, app.window_source):
            cached.cache_clear()


def test_the_archive_reads_one_versions_rows_as_the_database_does(engine: Engine, s3: Any) -> None:
    location = new_archive(s3)
    manifest = build_manifest(draw_traffic(300, seed=31))
    window = TimeWindow.ending_at(WINDOW_END, WINDOW)
    store_both(engine, s3, location, draw_traffic(400, seed=32), window.start, window.end)
    store_both(engine, s3, location, draw_traffic(250, seed=33, shift="mean"), window.start, window.end, version="v-other")
    training = SummaryReference.from_manifest(manifest)
    database = read_window_summaries(engine, MODEL_NAME, window, FEATURES, [training], version=manifest.version)
    archive = ArchiveWindowSource(s3, location).read_summaries(MODEL_NAME, window, FEATURES, [training], version=manifest.version)
    assert (database[0].n_rows, archive[0].n_rows) == (400, 400)
    assert differences(archive[0].to_json(), database[0].to_json()) == []
    assert archive_window_summaries(s3, location, MODEL_NAME, window, FEATURES, [training])[0].n_rows == 650
