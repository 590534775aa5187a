"""The schema migration step of every deploy: a function from the writer's image, run by a CDK trigger.

The trigger invokes the function synchronously during the deployment, after the database and its
proxy exist and before the writer (and its SQS event source) and drift are created or updated; an
error fails the deployment, which CloudFormation rolls back, so no function ever runs against a
schema it does not know. It runs again only when its inputs change (:func:`migration_inputs_digest`:
``sql/``, the migration runner with the functions' grants, and this step's handler): the trigger
invokes a Lambda version named after that digest, so a change to the writer's own code rebuilds the
image without re-running the migrations. A run with nothing pending would be a no-op anyway. Only
this function logs in as the master user (with an IAM token through the proxy); it also creates the
writer's and drift's users from their secrets, which only it and the proxy may read.

A daily EventBridge rule invokes the same function with ``{"sml_action": "retention"}`` and the
event's time: the retention step creates the coming days' partitions of ``predictions`` and drops
those past ``SML_RETENTION_DAYS`` (it alters the table, which only the master user may do).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import triggers
from constructs import Construct

from infra import names
from infra.config import DeploymentConfig
from infra.database import Database
from infra.drift import WINDOW_DAYS
from infra.image_function import ImageFunction
from infra.model_registry import ModelRegistry
from infra.network import Network
from infra.writer import database_environment

TIMEOUT = cdk.Duration.minutes(5)
MEMORY_MIB = 512
COMMAND = ["functions.writer.migrate.handler"]
# 00:30 UTC daily: the new day's partition exists days ahead, and the oldest day is dropped once it is
# past the retention. Well before the weekly drift run (Monday 06:00).
RETENTION_SCHEDULE = events.Schedule.cron(minute="30", hour="0")
# What a migration run does depends on these (relative to the repository root) and on nothing else.
MIGRATION_INPUTS = ("sql", "shared/sml/core/db.py", "functions/writer/migrate.py")


def migration_inputs_digest(root: Path = names.REPO_ROOT) -> str:
    """SHA-256 over the names and bytes of every file of :data:`MIGRATION_INPUTS` under ``root``, in path order.

    :raises FileNotFoundError: an input is missing under ``root``.
    """
    digest = hashlib.sha256()
    for relative in MIGRATION_INPUTS:
        path = root / relative
        files = sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts) if path.is_dir() else [path]
        if not path.exists():
            raise FileNotFoundError(path)
        for file in files:
            digest.update(file.relative_to(root).as_posix().encode() + b"\0")
            digest.update(file.read_bytes().replace(b"\r\n", b"\n") + b"\0")
    return digest.hexdigest()


class Migrations(Construct):
    """The migration function and the trigger that runs it before ``run_before``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        network: Network,
        database: Database,
        registry: ModelRegistry,
    ) -> None:
        super().__init__(scope, construct_id)
        environment = database_environment(config, registry, database, names.DB_ADMIN_USER)
        environment[names.ENV_POWERTOOLS_SERVICE_NAME] = "migrate"
        environment[names.ENV_WRITER_DB_SECRET_ARN] = database.user_secrets["writer"].secret_arn
        environment[names.ENV_DRIFT_DB_SECRET_ARN] = database.user_secrets["drift"].secret_arn
        environment[names.ENV_DRIFT_WINDOW_DAYS] = str(WINDOW_DAYS)
        environment[names.ENV_LABEL_HORIZON_DAYS] = f"{config.label_horizon_days:g}"
        if config.retention_days is not None:
            environment[names.ENV_RETENTION_DAYS] = str(config.retention_days)
        self.image = ImageFunction(
            self,
            "Image",
            dockerfile=names.WRITER_DOCKERFILE,
            command=COMMAND,
            description=f"{config.deployed_app_name} migrate: applies sql/ during each deploy; daily retention",
            environment=environment,
            memory_mib=MEMORY_MIB,
            timeout=TIMEOUT,
            placement=network.function_placement,
        )
        self.function = self.image.function
        database.grant_connect(self.image.role, names.DB_ADMIN_USER)
        database.grant_user_secrets_read(self.image.role)
        self.trigger = triggers.Trigger(
            self,
            "Run",
            handler=self.function,
            # The invocation may take as long as the function may run.
            timeout=TIMEOUT,
            execute_after=[database],
        )
        self.retention_schedule = events.Rule(
            self,
            "DailyRetention",
            schedule=RETENTION_SCHEDULE,
            description=f"Creates and drops the day partitions of {config.deployed_app_name}'s predictions",
            targets=[
                targets.LambdaFunction(
                    self.function,
                    event=events.RuleTargetInput.from_object({"sml_action": "retention", "time": events.EventField.time}),
                    retry_attempts=2,
                )
            ],
        )
        # The trigger re-runs when its HandlerArn changes, which CDK makes the function's current
        # version: new with every image change. A version named after the migration inputs changes
        # only with them (an image change always comes with it: the inputs are in the image).
        digest = migration_inputs_digest()
        self.version = lambda_.Version(
            self, f"Version{digest[:16]}", lambda_=self.function, description=f"migration inputs sha256 {digest[:16]}"
        )
        cfn_trigger = self.trigger.node.find_child("Default").node.default_child
        cfn_trigger.add_property_override("HandlerArn", self.version.function_arn)
        self.function.node.try_remove_child("CurrentVersion")

    def run_before(self, *scopes: Construct) -> None:
        """Create and update ``scopes`` (and everything in them) only after the migrations succeeded."""
        self.trigger.execute_before(*scopes)
