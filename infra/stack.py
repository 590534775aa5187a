"""The serverless-ml stack: one construct per capability, wired together, plus alarms and outputs."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from infra import names
from infra.alerts import Alerts
from infra.archive import ArchiveCompaction, ArchiveQueries
from infra.config import DeploymentConfig
from infra.database import Database
from infra.drift import Drift
from infra.events_queue import EventsQueue
from infra.image_function import ImageFunction
from infra.migrations import Migrations
from infra.monitoring import Monitoring
from infra.model_registry import ModelRegistry
from infra.network import Network
from infra.predict import Predict, predict_construct_id
from infra.writer import TIMEOUT as WRITER_TIMEOUT
from infra.writer import Writer, batching_window

# An event normally waits seconds; a quarter of an hour means the writer is failing or throttled.
OLDEST_EVENT_AGE_ALARM = cdk.Duration.minutes(15)
# What a function's error alarm adds to "raised errors; see its log group", where the error has a usual cause.
ERROR_ALARM_HINTS = {
    "Compact": " The usual one: a landing object under archive/landing/ was not converted to Parquet "
    "(ConversionFailed; the log line 'landing object ... not converted' names it and why). It stays there and "
    "every five-minute run tries it again; its events are in the database meanwhile.",
}


class ServerlessMlStack(cdk.Stack):
    """Everything one deployment (``config.environment``) needs.

    Environment-agnostic on purpose: synthesis needs no AWS account and no lookups; the CLI deploys
    into the account and region of the caller's credentials.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig) -> None:
        super().__init__(
            scope,
            construct_id,
            stack_name=config.stack_name,
            description=f"serverless-ml ({config.environment}): serve, capture and drift-check "
            f"{', '.join(config.model_names)}",
        )
        network = Network(
            self,
            "Network",
            endpoints_in_every_az=config.db_multi_az,
            availability_zones=config.availability_zones,
            athena_endpoint=config.drift_window_source == "athena",
        )
        database = Database(self, "Database", network=network, config=config)
        events = EventsQueue(self, "Events", consumer_timeout=WRITER_TIMEOUT, batching_window=batching_window(config))
        registry = ModelRegistry(self, "ModelRegistry", app_name=config.deployed_app_name, model_names=config.model_names)
        alerts = Alerts(self, "Alerts", alert_email=config.alert_email)
        # One predict function and Function URL per model; the queue, writer, database and bucket are shared.
        predicts = [
            Predict(
                self,
                predict_construct_id(config, model),
                config=config,
                registry=registry,
                events=events,
                model_name=model,
            )
            for model in config.model_names
        ]
        writer = Writer(
            self, "Writer", config=config, network=network, database=database, registry=registry, events=events
        )
        archive = ArchiveQueries(
            self,
            "ArchiveQueries",
            app_name=config.deployed_app_name,
            bucket_name=registry.bucket.bucket_name,
            model_names=config.model_names,
            scan_limit_bytes=config.archive_scan_limit_bytes,
        )
        drift = Drift(
            self, "Drift", config=config, network=network, database=database, registry=registry, alerts=alerts, archive=archive
        )
        compaction = ArchiveCompaction(self, "ArchiveCompaction", app_name=config.deployed_app_name, registry=registry)
        migrations = Migrations(
            self, "Migrations", config=config, network=network, database=database, registry=registry
        )
        migrations.run_before(writer, drift)
        # A deploy that changes the event contract updates the writer (and its event source) before
        # predict, so new event shapes never reach an old writer.
        for predict in predicts:
            predict.node.add_dependency(writer)

        functions = {
            ("Predict" if index == 0 else f"Predict-{predict.model_name}"): predict.image
            for index, predict in enumerate(predicts)
        }
        self._add_alarms(alerts, events, {**functions, "Writer": writer.image, "Drift": drift.image, "Compact": compaction.image})
        monitoring = Monitoring(
            self,
            "Monitoring",
            config=config,
            alerts=alerts,
            events=events,
            database=database,
            predicts=predicts,
            writer=writer,
            drift=drift,
        )
        self._add_outputs(config, registry, events, alerts, predicts, writer)
        cdk.CfnOutput(
            self,
            "DatabaseInstanceId",
            value=database.instance.instance_identifier,
            description="the RDS instance (its name ends in a suffix unique to this stack's creation)",
        )
        cdk.CfnOutput(self, "AthenaWorkGroup", value=archive.workgroup.ref, description="SML_ATHENA_WORKGROUP: Athena workgroup of sml query")
        cdk.CfnOutput(self, "AthenaDatabase", value=archive.database_name, description="SML_ATHENA_DATABASE: Glue database of the event archive")
        cdk.CfnOutput(self, "ProxyName", value=database.proxy.db_proxy_name, description="the RDS Proxy")
        cdk.CfnOutput(
            self, "DashboardName", value=monitoring.dashboard.dashboard_name, description="CloudWatch dashboard"
        )
        cdk.CfnOutput(
            self,
            "MigrateFunctionName",
            value=migrations.function.function_name,
            description="the deploy's migration step; invoke it after changing a database user's secret",
        )
        cdk.CfnOutput(
            self,
            "ArchiveFunctionName",
            value=compaction.function.function_name,
            description="the archive function: converts archive/landing/ into Parquet every 5 minutes, compacts daily",
        )
        cdk.CfnOutput(
            self,
            "MigrateLogGroup",
            value=migrations.image.log_group.log_group_name,
            description="log of the deploy's migration step",
        )

    def _add_alarms(self, alerts: Alerts, events: EventsQueue, functions: dict[str, ImageFunction]) -> None:
        alerts.alarm_when(
            "DeadLetterQueueNotEmpty",
            metric=events.dead_letter_queue.metric_approximate_number_of_messages_visible(
                statistic=cloudwatch.Stats.MAXIMUM, period=cdk.Duration.minutes(5)
            ),
            threshold=1,
            description="Prediction events failed to reach the database and wait in the DLQ; fix the cause, "
            "then run `sml dlq inspect` and `sml dlq replay`.",
        )
        alerts.alarm_when(
            "OldestEventTooOld",
            metric=events.queue.metric_approximate_age_of_oldest_message(
                statistic=cloudwatch.Stats.MAXIMUM, period=cdk.Duration.minutes(5)
            ),
            threshold=OLDEST_EVENT_AGE_ALARM.to_seconds(),
            evaluation_periods=2,
            description="Prediction events are not being written: check the writer's errors and the database.",
        )
        for name, image in functions.items():
            # "Predict-wine" (a further model's predict) alarms as PredictErrors-wine.
            function, _, model = name.partition("-")
            alerts.alarm_when(
                f"{function}Errors" + (f"-{model}" if model else ""),
                metric=image.function.metric_errors(statistic=cloudwatch.Stats.SUM, period=cdk.Duration.minutes(5)),
                threshold=1,
                description=f"The {function.lower()} function{f' of {model}' if model else ''} raised errors; "
                f"see its log group {image.log_group.log_group_name}." + ERROR_ALARM_HINTS.get(function, ""),
            )

    def _add_outputs(
        self,
        config: DeploymentConfig,
        registry: ModelRegistry,
        events: EventsQueue,
        alerts: Alerts,
        predicts: list[Predict],
        writer: Writer,
    ) -> None:
        outputs = {
            "AppName": (config.deployed_app_name, names.ENV_APP_NAME),
            "ModelName": (config.model_name, f"{names.ENV_MODEL_NAME} (the first model)"),
            "ModelNames": (",".join(config.model_names), "every model this deployment serves"),
            "Bucket": (registry.bucket.bucket_name, names.ENV_BUCKET),
            "QueueUrl": (events.queue.queue_url, names.ENV_QUEUE_URL),
            "DlqUrl": (events.dead_letter_queue.queue_url, "SML_DLQ_URL"),
            "TopicArn": (alerts.topic.topic_arn, names.ENV_TOPIC_ARN),
            "WriterFunctionName": (writer.function.function_name, "consumes the events queue"),
        }
        for index, predict in enumerate(predicts):
            # The first model's outputs keep their single-model names; the others end in the model's name.
            suffix = "" if index == 0 else output_suffix(predict.model_name)
            model = predict.model_name
            outputs |= {
                f"FunctionUrl{suffix}": (predict.url.url, f"SML_FUNCTION_URL: the predict endpoint of {model}"),
                f"PredictFunctionArn{suffix}": (predict.function.function_arn, f"the predict function of {model}"),
                f"PredictCallerPolicyArn{suffix}": (
                    predict.caller_policy.managed_policy_arn,
                    f"attach to a caller's role or user: invoke the predict of {model} through its URL only",
                ),
                f"ChampionParameter{suffix}": (
                    registry.champion_parameter_name(model),
                    f"SSM parameter `sml promote --model {model}` writes",
                ),
            }
        for output_id, (value, description) in outputs.items():
            cdk.CfnOutput(self, output_id, value=value, description=description)


def output_suffix(model_name: str) -> str:
    """A model's name as the end of an output id: ``wine-quality`` -> ``WineQuality``."""
    return "".join(part.capitalize() for part in model_name.split("-"))
