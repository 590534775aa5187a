"""The migration step of a deploy: applies ``sql/`` and the functions' database users, or fails the deploy.

The CDK stack builds a second function from the writer's image with this module as its command and
runs it in a CDK trigger (``infra/migrations.py``) ordered before the writer and its SQS event
source: CloudFormation updates neither until this has returned, and a raised error fails the
deployment (the trigger reports the invocation's ``FunctionError``) and rolls it back, so the writer
never consumes events into a schema it does not know. It logs in as the RDS master user (the one
that may create tables and users); then it creates the writer's and drift's own users with the
passwords in their secrets (RDS Proxy logs in with those) and grants them
:data:`sml.core.db.FUNCTION_GRANTS`. ``sml db migrate`` applies the schema locally.

A schema newer than this image's ``sql/`` is accepted, not refused: when a deploy that added a
migration fails after this step, CloudFormation's rollback updates the trigger back to the previous
image and runs it against the schema the failed deploy already migrated (a trigger re-runs on
rollback with its old properties). Refusing would leave the stack in ``UPDATE_ROLLBACK_FAILED``.
Migrations only add (``IF NOT EXISTS``), so the previous writer still works on the newer schema;
the newer migrations are logged and returned as ``newer_than_image``. The one that changes a key,
0008 (``predictions`` partitioned, primary key ``(prediction_id, predicted_at)``), keeps that true:
a writer from before it still skips a redelivered event, whose id and time are those stored.

The daily EventBridge rule invokes the same function with ``{"sml_action": "retention", "time":
...}``: the retention step (:func:`sml.core.retention.run_retention_step`) creates the coming days'
partitions of ``predictions`` and drops those past ``SML_RETENTION_DAYS``. It runs here because
only the master user may alter the table; the writer's and drift's users may not.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from sml.core.aws import aws_client
from sml.core.db import (
    DatabaseUser,
    apply_function_users,
    apply_migrations,
    database_engine_from_settings,
    migrations_newer_than_files,
)
from sml.core.errors import SmlError
from sml.core.retention import run_retention_step
from sml.core.settings import MigrateSettings, load_settings

logger = Logger(service="migrate")
RETENTION_ACTION = "retention"


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Apply the pending migrations under the migration lock, then the function users' grants; or,
    for ``{"sml_action": "retention"}``, the retention step (returns its summary).

    :returns: ``{"applied": [migration names], "granted": {function: [tables]}, "newer_than_image":
        [migration names the database holds beyond this image's files]}``.
    :raises sml.core.errors.SmlError: an applied file was edited, another run held the lock, or a
        user secret lacks ``username``/``password``.
    :raises sqlalchemy.exc.SQLAlchemyError: a statement failed; rerunning resumes (each is rerunnable).
    """
    settings = load_settings(MigrateSettings)
    engine = database_engine_from_settings(settings, lambda service: aws_client(service, settings))
    if event.get("sml_action") == RETENTION_ACTION:
        try:
            return run_retention_step(engine, settings, event, logger).summary()
        finally:
            engine.dispose()
    try:
        applied = apply_migrations(engine, accept_newer=True)
        newer = migrations_newer_than_files(engine)
        users = function_users(settings, lambda: aws_client("secretsmanager", settings))
        granted = apply_function_users(engine, users) if users else {}
    finally:
        engine.dispose()
    if newer:
        logger.warning(
            "the database holds migrations newer than this image (a rolled-back deploy); left as they are",
            extra={"newer_than_image": newer},
        )
    logger.info("migrations applied", extra={"applied": applied, "granted": granted})
    return {"applied": applied, "granted": granted, "newer_than_image": newer}


def function_users(settings: MigrateSettings, secrets_client: Any) -> list[DatabaseUser]:
    """The writer's and drift's users from their secrets (none configured: none, as locally).

    :param secrets_client: a function returning a Secrets Manager client, called only when needed.
    """
    arns = {"writer": settings.writer_db_secret_arn, "drift": settings.drift_db_secret_arn}
    users = []
    client = None
    for function, arn in arns.items():
        if not arn:
            continue
        client = client or secrets_client()
        secret = json.loads(client.get_secret_value(SecretId=arn)["SecretString"])
        if not secret.get("username") or not secret.get("password"):
            raise SmlError(f"the {function} database secret {arn} has no username or password")
        users.append(DatabaseUser(function, secret["username"], secret["password"]))
    return users
