"""The writer function: consumes prediction events from SQS in batches into MySQL via the proxy, and lands each stored batch in the event archive's landing area in S3 (one object; the archive function converts it to Parquet)."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_lambda_event_sources as event_sources
from constructs import Construct

from infra import names
from infra.config import DeploymentConfig
from infra.database import Database
from infra.events_queue import EventsQueue
from infra.image_function import ImageFunction
from infra.model_registry import ModelRegistry
from infra.network import Network

TIMEOUT = cdk.Duration.seconds(30)
MEMORY_MIB = 512


def database_environment(
    config: DeploymentConfig, registry: ModelRegistry, database: Database, db_user: str
) -> dict[str, str]:
    """Environment of the functions that use the database: where it is and who to log in as (IAM), no password."""
    return {
        names.ENV_APP_NAME: config.deployed_app_name,
        names.ENV_MODEL_NAME: config.model_name,
        names.ENV_BUCKET: registry.bucket.bucket_name,
        names.ENV_DB_USER: db_user,
        names.ENV_DB_HOST: database.endpoint,
        names.ENV_DB_NAME: names.DB_NAME,
        names.ENV_POWERTOOLS_METRICS_NAMESPACE: config.deployed_app_name,
    }


def batching_window(config: DeploymentConfig) -> cdk.Duration:
    """The writer's maximum batching window."""
    return cdk.Duration.seconds(config.writer_batching_window_seconds)


class Writer(Construct):
    """The writer function in the VPC with its SQS event source.

    Maximum concurrency keeps the writer inside the database connection budget; partial batch
    responses let one bad record fail alone.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        network: Network,
        database: Database,
        registry: ModelRegistry,
        events: EventsQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        db_user = names.DB_FUNCTION_USERS["writer"]
        environment = database_environment(config, registry, database, db_user)
        environment[names.ENV_POWERTOOLS_SERVICE_NAME] = "writer"
        environment[names.ENV_ARCHIVE_PREFIX] = names.ARCHIVE_PREFIX
        self.image = ImageFunction(
            self,
            "Image",
            dockerfile=names.WRITER_DOCKERFILE,
            description=f"{config.deployed_app_name} writer: stores prediction events in MySQL",
            environment=environment,
            memory_mib=MEMORY_MIB,
            timeout=TIMEOUT,
            placement=network.function_placement,
        )
        self.function = self.image.function
        database.grant_connect(self.image.role, db_user)
        registry.grant_archive_landing(self.image.role)
        self.function.add_event_source(
            event_sources.SqsEventSource(
                events.queue,
                batch_size=config.writer_batch_size,
                max_batching_window=batching_window(config),
                report_batch_item_failures=True,
                max_concurrency=config.writer_max_concurrency,
            )
        )
