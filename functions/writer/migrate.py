"""The migration step of a deploy: applies ``sql/`` to the deployed database, or fails the deploy.

The CDK stack builds a second function from the writer's image with this module as its command and
runs it in a CDK trigger (``infra/migrations.py``) ordered before the writer and its SQS event
source: CloudFormation updates neither until this has returned, and a raised error fails the
deployment (the trigger reports the invocation's ``FunctionError``) and rolls it back, so the writer
never consumes events into a schema it does not know. It logs in with the RDS master secret, the
one credential that may create tables. ``sml db migrate`` does the same locally.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from sml.core.aws import aws_client
from sml.core.db import apply_migrations, create_db_engine, resolve_database_url
from sml.core.settings import WriterSettings, load_settings

logger = Logger(service="migrate")


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, list[str]]:
    """Apply the pending migrations under the migration lock; returns ``{"applied": [names]}``.

    :raises sml.core.errors.SmlError: an applied file was edited, or another run held the lock.
    :raises sqlalchemy.exc.SQLAlchemyError: a statement failed; rerunning resumes (each is rerunnable).
    """
    settings = load_settings(WriterSettings)
    secrets_client = aws_client("secretsmanager", settings) if settings.db_secret_arn else None
    engine = create_db_engine(resolve_database_url(settings, secrets_client))
    try:
        applied = apply_migrations(engine)
    finally:
        engine.dispose()
    logger.info("migrations applied", extra={"applied": applied})
    return {"applied": applied}
