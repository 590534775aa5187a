"""The drift function and its weekly schedule."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from constructs import Construct

from infra import names
from infra.alerts import Alerts
from infra.archive import ArchiveQueries
from infra.config import DeploymentConfig
from infra.database import Database
from infra.image_function import ImageFunction
from infra.model_registry import ModelRegistry
from infra.network import Network
from infra.writer import database_environment

WINDOW_DAYS = 7
# Monday 06:00 UTC: a full week of predictions, read before the working week starts.
SCHEDULE = events.Schedule.cron(minute="0", hour="6", week_day="MON")
# Daily 01:00 UTC (after the retention step at 00:30): the daily step stores the days that ended,
# so Monday's weekly run merges them instead of reading a week of rows.
DAILY_SCHEDULE = events.Schedule.cron(minute="0", hour="1")
DAILY_SUMMARIES_ACTION = "daily_summaries"
# /tmp of a drift function reading the archive with DuckDB, Lambda's most (see Drift).
DUCKDB_EPHEMERAL_MIB = 10_240


class Drift(Construct):
    """The drift function in the VPC, run weekly by EventBridge, and daily for its daily summaries."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        network: Network,
        database: Database,
        registry: ModelRegistry,
        alerts: Alerts,
        archive: ArchiveQueries,
    ) -> None:
        super().__init__(scope, construct_id)
        db_user = names.DB_FUNCTION_USERS["drift"]
        environment = database_environment(config, registry, database, db_user)
        environment.update(
            {
                names.ENV_TOPIC_ARN: alerts.topic.topic_arn,
                names.ENV_DRIFT_WINDOW_DAYS: str(WINDOW_DAYS),
                names.ENV_REPORT_PREFIX: names.REPORTS_PREFIX,
                names.ENV_POWERTOOLS_SERVICE_NAME: "drift",
                names.ENV_WINDOW_SOURCE: config.drift_window_source,
            }
        )
        # Where the weekly run reads its window (context drift_window_source): the archive's settings only when it reads there.
        if config.drift_window_source in ("duckdb", "athena"):
            environment[names.ENV_ARCHIVE_PREFIX] = names.ARCHIVE_PREFIX
        if config.drift_window_source == "duckdb":
            # The labels of the window's predictions are read from the archive from this long before the window on.
            environment[names.ENV_LABEL_HORIZON_DAYS] = f"{config.label_horizon_days:g}"
        if config.drift_window_source == "athena":
            environment[names.ENV_ATHENA_WORKGROUP] = archive.workgroup_name
            environment[names.ENV_ATHENA_DATABASE] = archive.database_name
        if config.drift_feature_floors:
            environment[names.ENV_DRIFT_FEATURE_FLOORS] = config.drift_feature_floors
        for variable, threshold in (
            (names.ENV_DQ_MAX_OUT_OF_RANGE, config.dq_max_out_of_range),
            (names.ENV_DQ_MAX_UNSEEN_CATEGORY, config.dq_max_unseen_category),
            (names.ENV_DQ_MAX_MISSING_EXCESS, config.dq_max_missing_excess),
            (names.ENV_DQ_MAX_REFUSED_RATE, config.dq_max_refused_rate),
        ):
            if threshold is not None:
                environment[variable] = str(threshold)
        self.image = ImageFunction(
            self,
            "Image",
            dockerfile=names.DRIFT_DOCKERFILE,
            description=f"{config.deployed_app_name} drift: weekly drift tests, report and alert",
            environment=environment,
            # Context drift_memory_mib and drift_timeout_minutes; docs/deploy.md sizes them per traffic.
            memory_mib=config.drift_memory_mib,
            timeout=cdk.Duration.minutes(config.drift_timeout_minutes),
            placement=network.function_placement,
            # The duckdb source downloads the window's days to /tmp (sml.archive.sources): Lambda's most,
            # ~30M events (~277 B each, and DuckDB's spill) where the default 512 MiB held under 1.8M.
            ephemeral_storage_mib=DUCKDB_EPHEMERAL_MIB if config.drift_window_source == "duckdb" else None,
        )
        self.function = self.image.function
        database.grant_connect(self.image.role, db_user)
        registry.grant_model_read(self.image.role, config.model_names)
        registry.grant_champion_read(self.image.role, config.model_names)
        registry.grant_report_write(self.image.role)
        alerts.grant_publish(self.image.role)
        if config.drift_window_source == "duckdb":
            registry.grant_archive_read(self.image.role)
        elif config.drift_window_source == "athena":
            archive.grant_query(self.image.role, registry)
        # One weekly rule per model. With several models each rule's input names its model (and keeps
        # the event's time, which ends the window); one model keeps the plain scheduled event, whose
        # model is the function's SML_MODEL_NAME. Each run alerts for its own model.
        self.schedules = self._rule_per_model(config, "Weekly", SCHEDULE, f"Runs the {config.deployed_app_name} drift job weekly", {})
        self.schedule = self.schedules[config.model_names[0]]
        # One daily rule per model: {"sml_action": "daily_summaries", "time": ...} (and the model's name
        # with several models), the drift function's daily step (sml.monitoring.daily).
        self.daily_schedules = self._rule_per_model(
            config,
            "DailySummaries",
            DAILY_SCHEDULE,
            f"Stores the daily window summaries of {config.deployed_app_name}",
            {names.EVENT_SML_ACTION: DAILY_SUMMARIES_ACTION},
        )

    def _rule_per_model(
        self, config: DeploymentConfig, rule_id: str, schedule: events.Schedule, description: str, fixed_input: dict[str, str]
    ) -> dict[str, events.Rule]:
        """One rule per model invoking the function on ``schedule``. With several models the input
        names the model; with ``fixed_input`` or several models the input is that plus the event's
        ``time``; otherwise the plain scheduled event goes (its model is SML_MODEL_NAME)."""
        several = len(config.model_names) > 1
        rules = {}
        for index, model in enumerate(config.model_names):
            event = None
            if fixed_input or several:
                event_input = {**fixed_input, **({names.EVENT_MODEL_NAME: model} if several else {}), "time": events.EventField.time}
                event = events.RuleTargetInput.from_object(event_input)
            rules[model] = events.Rule(
                self,
                rule_id if index == 0 else f"{rule_id}-{model}",
                schedule=schedule,
                description=description + (f" for {model}" if several else ""),
                targets=[targets.LambdaFunction(self.function, event=event, retry_attempts=2)],
            )
        return rules
