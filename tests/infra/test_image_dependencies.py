"""Each Lambda image's dependency set, proven without Docker.

Each function's Dockerfile is replayed (:mod:`tests.infra.lambda_image`): the build context as
``.dockerignore`` admits it, ``pip install`` of the function's extra into an empty target folder,
the files the Dockerfile copies. The handler named by ``CMD`` is then imported and invoked in a
fresh interpreter that sees only the standard library and that folder
(:mod:`tests.infra.lambda_image_invoke`), against moto's server and an SQLite file. A dependency
missing from an extra, or a file the image would not get, fails here.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import sqlalchemy as sa
from moto.server import ThreadedMotoServer

from sml.core.db import DRIFT_RUNS, PREDICTIONS, apply_migrations, create_db_engine, discover_migrations
from sml.core.events import build_prediction_event, serialise_prediction_event
from sml.local.poller import sqs_event_record
from sml.demo.traffic import draw_rows
from sml.writer.batch import insert_prediction_rows, prediction_row
from tests.infra.lambda_image import LambdaTaskRoot, build_task_root, copy_build_context
from tests.predict_support import APP_NAME, MODEL_NAME, function_url_event, register_champion, valid_row

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("images")]

REPOSITORY = Path(__file__).resolve().parents[2]
INVOKER = Path(__file__).with_name("lambda_image_invoke.py")
SCHEDULED_EVENT = json.loads((REPOSITORY / "tests" / "fixtures" / "eventbridge_scheduled_event.json").read_text())
SCHEDULED_EVENT_TIME = datetime(2015, 10, 8, 16, 53, 6, tzinfo=UTC)
REGION = "us-east-1"
FUNCTIONS = ("predict", "writer", "drift")
# Top-level modules an image must not hold: other functions' and training's dependencies.
NOT_IN_IMAGE = {
    # pandas is in predict's image for DataFrame models; array models never import it (test_predict_imports).
    "predict": ("sqlalchemy", "pymysql", "wandb", "matplotlib"),
    # The writer lands the archive's batches as MessagePack; the archive function (drift image) builds the Parquet.
    "writer": ("sklearn", "scipy", "numpy", "joblib", "wandb", "pandas", "matplotlib", "pyarrow", "duckdb"),
    # scikit-learn (and its joblib) computes the model quality metrics (issue 16).
    "drift": ("wandb", "pandas", "matplotlib"),
}
# What the tests, local mode and the CDK app run with; none of it may reach a handler.
TEST_TOOLING = ("moto", "pytest", "hypothesis", "requests", "rich", "aws_cdk")


@dataclass(frozen=True)
class MotoAccount:
    """Clients of moto's server, which the handler in the child interpreter reaches at ``endpoint``."""

    endpoint: str
    s3: Any
    ssm: Any
    sqs: Any
    sns: Any

    def new_queue(self, prefix: str) -> tuple[str, str]:
        """A new queue; its URL and ARN."""
        url = self.sqs.create_queue(QueueName=f"{prefix}-{uuid.uuid4().hex}")["QueueUrl"]
        return url, self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def new_bucket(self) -> str:
        bucket = f"sml-image-{uuid.uuid4().hex[:12]}"
        self.s3.create_bucket(Bucket=bucket)
        return bucket

    def drain(self, queue_url: str) -> list[dict[str, Any]]:
        """Receive every message of ``queue_url`` (a short poll may miss some, so poll until empty)."""
        messages: list[dict[str, Any]] = []
        while batch := self.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=60).get("Messages", []):
            messages.extend(batch)
        return messages


@pytest.fixture(scope="module")
def moto_account() -> Iterator[MotoAccount]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    session = boto3.session.Session(region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
    yield MotoAccount(endpoint, *(session.client(name, endpoint_url=endpoint) for name in ("s3", "ssm", "sqs", "sns")))
    server.stop()


@pytest.fixture(scope="module")
def lambda_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], LambdaTaskRoot]]:
    """Builds a function's image folder on first request; the folders (~0.8 GB together) go at the end."""
    work_dir = tmp_path_factory.mktemp("images")
    built: dict[str, LambdaTaskRoot] = {}

    def build(function: str) -> LambdaTaskRoot:
        if function not in built:
            copy_build_context(REPOSITORY, work_dir / function / "context")
            dockerfile = REPOSITORY / "functions" / function / "Dockerfile"
            built[function] = build_task_root(dockerfile, work_dir / function / "context", work_dir / function)
        return built[function]

    yield build
    shutil.rmtree(work_dir)


def invoke_in_image(
    image: LambdaTaskRoot, function: str, events: list[dict[str, Any]], environment: dict[str, str], work_dir: Path
) -> list[Any]:
    """Invoke the image's handler with each event in a fresh interpreter that sees the stdlib and the image only.

    :param environment: the function's settings, on top of the Dockerfile's ``ENV`` and Lambda's AWS variables.
    :returns: the handler's responses, as Lambda would serialise them.
    """
    request, report_path, home = work_dir / "request.json", work_dir / "report.json", work_dir / "home"
    home.mkdir()
    probes = (*NOT_IN_IMAGE[function], *TEST_TOOLING)
    request.write_text(
        json.dumps(
            {"task_root": str(image.path), "handler": image.handler, "function_name": function, "events": events, "probe_modules": probes}
        )
    )
    child_environment = {
        "PATH": os.environ.get("PATH", ""),
        # An empty home: no developer's ~/.aws config or caches reach the handler.
        "HOME": str(home),
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        **image.environment,
        **environment,
    }
    completed = subprocess.run(
        [sys.executable, "-I", "-S", str(INVOKER), str(request), str(report_path)],
        env=child_environment,
        cwd=image.path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, f"{function} handler failed in its image:\n{completed.stderr[-5000:]}"
    report = json.loads(report_path.read_text())
    assert_loaded_from_image_and_stdlib_only(report, image)
    return report["responses"]


def assert_loaded_from_image_and_stdlib_only(report: dict[str, Any], image: LambdaTaskRoot) -> None:
    """The child saw only the stdlib and the image, could import none of the probes, and loaded nothing else."""
    assert report["sys_path"][0] == str(image.path)
    assert [entry for entry in report["sys_path"] if "site-packages" in entry] == []
    assert [name for name, found in report["importable"].items() if found] == []
    allowed = [image.path.resolve(), *{Path(sysconfig.get_paths()[key]).resolve() for key in ("stdlib", "platstdlib")}]
    outside = {
        name: file
        for name, file in report["module_files"].items()
        if file is not None and file != str(INVOKER) and not any(Path(file).resolve().is_relative_to(root) for root in allowed)
    }
    assert outside == {}
    assert report["module_files"]["sml"].startswith(str(image.path))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_image_holds_none_of_the_other_functions_packages(function: str, lambda_image: Callable[[str], LambdaTaskRoot]) -> None:
    image = lambda_image(function)

    installed = {path.name.removesuffix(".py") for path in image.path.iterdir()}

    assert {"sml", "functions", "boto3", "pydantic", "aws_lambda_powertools", "aws_xray_sdk"} <= installed
    assert sorted(installed & {*NOT_IN_IMAGE[function], *TEST_TOOLING}) == []


def test_predict_image_answers_health_and_a_prediction_and_queues_its_event(
    lambda_image: Callable[[str], LambdaTaskRoot], moto_account: MotoAccount, tmp_path: Path
) -> None:
    image = lambda_image("predict")
    bucket = moto_account.new_bucket()
    register_champion(moto_account.s3, moto_account.ssm, bucket=bucket, work_dir=tmp_path, version="v1")
    queue_url, _ = moto_account.new_queue("events")
    environment = {
        "SML_AWS_ENDPOINT_URL": moto_account.endpoint,
        "SML_APP_NAME": APP_NAME,
        "SML_BUCKET": bucket,
        "SML_QUEUE_URL": queue_url,
        "SML_MODEL_CACHE_DIR": str(tmp_path / "model-cache"),
    }
    events = [function_url_event("GET", "/health"), function_url_event("POST", "/predict", json.dumps({"features": valid_row()}))]

    health, prediction = invoke_in_image(image, "predict", events, environment, tmp_path)

    assert (health["statusCode"], json.loads(health["body"])["model_version"]) == (200, "v1")
    answer = json.loads(prediction["body"])
    assert prediction["statusCode"] == 200, answer
    assert answer["model_version"] == "v1" and answer["prediction"] in answer["probabilities"]
    queued = [json.loads(message["Body"]) for message in moto_account.drain(queue_url)]
    assert [(event["prediction_id"], event["prediction"]) for event in queued] == [(answer["prediction_id"], answer["prediction"])]


def test_writer_image_migrates_the_database_and_stores_a_batch(
    lambda_image: Callable[[str], LambdaTaskRoot], moto_account: MotoAccount, tmp_path: Path
) -> None:
    image = lambda_image("writer")
    database_url = f"sqlite:///{tmp_path / 'sml.db'}"
    event = build_prediction_event(
        model_name=MODEL_NAME,
        model_version="v1",
        features={"mean_radius": 14.2},
        prediction="benign",
        probabilities={"benign": 0.9, "malignant": 0.1},
    )
    queue_url, queue_arn = moto_account.new_queue("writer")
    moto_account.sqs.send_message(QueueUrl=queue_url, MessageBody=serialise_prediction_event(event))
    [message] = moto_account.drain(queue_url)
    sqs_event = {"Records": [sqs_event_record(message, queue_arn=queue_arn, region=REGION)]}

    migrated, stored = invoke_in_image(
        image, "writer", [{"sml_action": "migrate"}, sqs_event], {"SML_DATABASE_URL": database_url}, tmp_path
    )

    expected = [f"{migration.version:04d}_{migration.name}" for migration in discover_migrations(REPOSITORY / "sql", "sqlite")]
    assert migrated == {"applied": expected}
    assert stored == {"batchItemFailures": []}
    engine = create_db_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(sa.select(PREDICTIONS.c.prediction_id, PREDICTIONS.c.model_version)).all()
    engine.dispose()
    assert [tuple(row) for row in rows] == [(event.prediction_id, "v1")]


def test_writer_image_with_the_migration_command_migrates_the_database(
    lambda_image: Callable[[str], LambdaTaskRoot], tmp_path: Path
) -> None:
    # The deploy's migration function is the writer's image with another CMD (infra/migrations.py).
    from dataclasses import replace

    from infra.migrations import COMMAND

    image = replace(lambda_image("writer"), handler=COMMAND[0])
    database_url = f"sqlite:///{tmp_path / 'sml.db'}"
    (migrated,) = invoke_in_image(image, "writer", [{}], {"SML_DATABASE_URL": database_url}, tmp_path)
    expected = [f"{migration.version:04d}_{migration.name}" for migration in discover_migrations(REPOSITORY / "sql", "sqlite")]
    assert migrated == {"applied": expected, "granted": {}, "newer_than_image": []}


def test_drift_image_runs_the_scheduled_job_stores_the_run_and_alerts(
    lambda_image: Callable[[str], LambdaTaskRoot], moto_account: MotoAccount, tmp_path: Path
) -> None:
    image = lambda_image("drift")
    bucket = moto_account.new_bucket()
    register_champion(moto_account.s3, moto_account.ssm, bucket=bucket, work_dir=tmp_path, version="v1")
    topic_arn = moto_account.sns.create_topic(Name=f"drift-{uuid.uuid4().hex[:12]}")["TopicArn"]
    alerts_url, alerts_arn = moto_account.new_queue("alerts")
    moto_account.sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=alerts_arn)
    database_url = f"sqlite:///{tmp_path / 'sml.db'}"
    window_rows = 300
    store_window_traffic(database_url, window_rows)
    environment = {
        "SML_AWS_ENDPOINT_URL": moto_account.endpoint,
        "SML_APP_NAME": APP_NAME,
        "SML_BUCKET": bucket,
        "SML_TOPIC_ARN": topic_arn,
        "SML_DATABASE_URL": database_url,
    }

    [summary] = invoke_in_image(image, "drift", [SCHEDULED_EVENT], environment, tmp_path)

    assert (summary["model_version"], summary["current_rows"]) == ("v1", window_rows)
    assert summary["window_end"] == SCHEDULED_EVENT_TIME.isoformat()
    engine = create_db_engine(database_url)
    with engine.connect() as connection:
        runs = connection.execute(sa.select(DRIFT_RUNS.c.run_id, DRIFT_RUNS.c.status)).all()
    engine.dispose()
    assert [tuple(run) for run in runs] == [(summary["run_id"], summary["status"])]
    report_key = summary["report_uri"].removeprefix(f"s3://{bucket}/")
    assert moto_account.s3.head_object(Bucket=bucket, Key=report_key)["ContentLength"] > 0
    alerts = [json.loads(message["Body"]) for message in moto_account.drain(alerts_url)]
    assert [alert["MessageId"] for alert in alerts] == [summary["message_id"]]


def store_window_traffic(database_url: str, rows: int) -> None:
    """Migrate ``database_url`` and store ``rows`` predictions from the data set in the week before the scheduled event."""
    step = timedelta(days=7) / (rows + 1)
    events = [
        build_prediction_event(
            model_name=MODEL_NAME,
            model_version="v1",
            features=row,
            prediction="benign",
            predicted_at=SCHEDULED_EVENT_TIME - (index + 1) * step,
        )
        for index, row in enumerate(draw_rows(rows, np.random.default_rng(7)))
    ]
    engine = create_db_engine(database_url)
    apply_migrations(engine, REPOSITORY / "sql")
    with engine.begin() as connection:
        insert_prediction_rows(connection, [prediction_row(event, stored_at=SCHEDULED_EVENT_TIME) for event in events])
    engine.dispose()


def test_drift_image_with_the_compaction_command_compacts_the_day_before_the_event(
    lambda_image: Callable[[str], LambdaTaskRoot], moto_account: MotoAccount, tmp_path: Path
) -> None:
    # The daily compaction function is the drift image with another CMD (infra/archive.py): DuckDB and pyarrow come with it.
    from dataclasses import replace

    from infra.names import COMPACT_COMMAND
    from sml.archive.store import ArchiveLocation, archive_rows
    from sml.writer.batch import parse_records

    image = replace(lambda_image("drift"), handler=COMPACT_COMMAND[0])
    bucket = moto_account.new_bucket()
    location = ArchiveLocation(bucket, "archive/")
    day = SCHEDULED_EVENT_TIME - timedelta(days=1)
    for batch in range(2):
        event = build_prediction_event(model_name=MODEL_NAME, model_version="v1", features={"mean_radius": 14.2}, prediction="benign", predicted_at=day)
        archive_rows(moto_account.s3, location, predictions=parse_records([("m", serialise_prediction_event(event))], day + timedelta(minutes=batch)).rows)
    environment = {"SML_AWS_ENDPOINT_URL": moto_account.endpoint, "SML_APP_NAME": APP_NAME, "SML_BUCKET": bucket, "SML_ARCHIVE_PREFIX": "archive/"}

    [result] = invoke_in_image(image, "drift", [SCHEDULED_EVENT], environment, tmp_path)

    assert (result["day"], result["objects_merged"], result["objects_written"], result["rows"]) == (day.date().isoformat(), 2, 1, 2)
