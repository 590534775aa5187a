from dataclasses import replace
from datetime import timedelta
import pytest
from archive_support import engine, new_archive, s3  # noqa: F401
from test_archive_window_quality import fitted, send_window_events, differences, RUN_IDENTITY, WINDOW_END, WINDOW
from sml.archive.sources import ArchiveWindowSource
from sml.archive.store import WriterArchive
from sml.monitoring.job import DriftJobConfig, run_drift_job
from sml.monitoring.model_quality.store import load_quality
from sml.monitoring.sources import DatabaseWindowSource
from sml.monitoring.store import load_drift_run


def stored(engine, manifest, end):
    run = load_drift_run(engine, manifest.model_name, end, version=manifest.version)
    q = load_quality(engine, run.run["run_id"])
    plain = lambda row: {k: v for k, v in row.items() if k not in RUN_IDENTITY}
    return {"run": plain(run.run), "features": [plain(r) for r in run.features], "dq": [plain(r) for r in run.data_quality],
            "quality": None if q is None else plain(q.run), "metrics": None if q is None else [plain(r) for r in q.metrics]}


@pytest.mark.parametrize("task", ["binary", "regression"])
@pytest.mark.parametrize("shift,version", [(0, "v-before"), (1, None), (-1, None), (3, None)])
def test_windows(engine, s3, task, shift, version):
    model = fitted(task)
    location = new_archive(s3)
    send_window_events(engine, WriterArchive(s3, location), model, seed=7)
    manifest = model.manifest if version is None else replace(model.manifest, version=version)
    end = WINDOW_END + shift * WINDOW
    config = DriftJobConfig(bucket=location.bucket, topic_arn=None)
    out = {}
    for source in (DatabaseWindowSource(engine), ArchiveWindowSource(s3, location)):
        try:
            r = run_drift_job(config, manifest, engine=engine, s3_client=s3, sns_client=None, window_end=end, window_source=source).run
            out[source.name] = (stored(engine, manifest, end), r.other_versions, r.refused_requests, r.version_since)
        except Exception as exc:
            out[source.name] = repr(exc)
    print(task, shift, version, out["database"] if isinstance(out["database"], str) else out["database"][0]["run"]["status"])
    assert not isinstance(out["database"], str) or out["database"] == out["duckdb"], out
    assert differences(out["duckdb"][0], out["database"][0]) == []
    assert out["duckdb"][1:] == out["database"][1:]
