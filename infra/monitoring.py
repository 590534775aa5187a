"""Alarms beyond the basics, and the stack's CloudWatch dashboard.

Custom metrics are the functions' Powertools metrics: namespace ``POWERTOOLS_METRICS_NAMESPACE``
(the deployed app name), dimension ``service`` (predict, writer, drift). A broken champion makes
predict answer 503 without raising, so it is counted from predict's log instead (the JSON line
with ``champion_unavailable`` that predict logs for every such answer). A model that fails on valid
input (500 ``model_error``) is counted by predict's own ``ModelErrors`` metric, apart from it, and a
promoted version a warm container cannot load by ``ChampionRefreshFailures`` (the old one serves on).

``RefusedValues`` (feature values predict refused with a 4xx) has the dimensions ``service`` and
``field``, one series per field, and predict emits no aggregate without ``field``. The dashboard sums
the fields with a SEARCH expression. An alarm cannot use SEARCH, and a math expression would have to
name every field (at most 10 metrics; the fields depend on the deployed model), so the alarm sums
them with a Metrics Insights query instead. That query stands alone, not divided by
``PredictionsServed``: the alarm is on a count per hour (context ``alarm_refused_values``), not a share.
"""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.alerts import Alerts
from infra.config import DeploymentConfig
from infra.database import ALLOCATED_STORAGE_GIB, MAX_ALLOCATED_STORAGE_GIB, Database
from infra.drift import Drift
from infra.events_queue import EventsQueue
from infra.predict import Predict
from infra.writer import Writer

FIVE_MINUTES = cdk.Duration.minutes(5)
# RDS storage autoscaling grows the volume when free space is at most 10% of the allocated storage for
# 5 minutes, at most once per 6 hours and never beyond max_allocated_storage (RDS User Guide, "Managing
# capacity automatically with Amazon RDS storage autoscaling"). An alarm at that same level would fire
# each time autoscaling is about to act, which is normal operation. So the alarm waits: free space at
# or below 10% of the starting allocation for a whole hour, minimum of every 5-minute period, means
# autoscaling did not (or could not: at its maximum, or inside its 6-hour pause) add space.
FREE_STORAGE_ALARM_BYTES = ALLOCATED_STORAGE_GIB * 2**30 // 10
FREE_STORAGE_ALARM_PERIODS = 12
# Drift runs weekly; 7 daily periods without an invocation means it missed a run (the alarm
# fires in the first daily period after a missed Monday, ~8 days after the last run). Seven days
# is the longest window a CloudWatch alarm may evaluate (Period x EvaluationPeriods).
DRIFT_SILENCE_PERIOD = cdk.Duration.days(1)
DRIFT_SILENCE_PERIODS = 7
CHAMPION_UNAVAILABLE_PATTERN = '{ $.champion_unavailable = "*" }'
REFUSED_VALUES_PERIOD = cdk.Duration.hours(1)


class Monitoring(Construct):
    """The alarms issue 14 asked for and the dashboard; the basic ones stay in the stack."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        alerts: Alerts,
        events: EventsQueue,
        database: Database,
        predicts: Sequence[Predict],
        writer: Writer,
        drift: Drift,
    ) -> None:
        super().__init__(scope, construct_id)
        self.namespace = config.deployed_app_name
        capture_misses = self._custom("predict", "CaptureMisses")
        model_errors = self._custom("predict", "ModelErrors")
        refresh_failures = self._custom("predict", "ChampionRefreshFailures")
        # Per model: its URL's 5xx and its champion failures. The first model keeps the single-model
        # ids and metric name, so adding models changes nothing of an existing deployment's alarms.
        per_model = {predict.model_name: self._predict_metrics(predict, first=index == 0) for index, predict in enumerate(predicts)}
        writer_throttles = writer.function.metric_throttles(statistic=cloudwatch.Stats.SUM, period=FIVE_MINUTES)
        # The weekly run's own metric (functions/drift/app.py): the daily step invokes the function daily too.
        drift_invocations = cloudwatch.Metric(
            namespace=self.namespace,
            metric_name="weekly_runs",
            dimensions_map={"service": "drift"},
            statistic=cloudwatch.Stats.SUM,
            period=DRIFT_SILENCE_PERIOD,
        )
        free_storage = database.instance.metric_free_storage_space(
            statistic=cloudwatch.Stats.MINIMUM, period=FIVE_MINUTES
        )
        # '{namespace,field,service}' is exactly RefusedValues' dimension set: one series per field.
        refused_search = (
            f"SEARCH('{{\"{self.namespace}\",field,service}} MetricName=\"RefusedValues\" service=\"predict\"', "
            f"'Sum', {int(FIVE_MINUTES.to_seconds())})"
        )
        refused_per_field = cloudwatch.MathExpression(
            expression=refused_search, using_metrics={}, label="${PROP('Dim.field')}", period=FIVE_MINUTES
        )
        refused_total = cloudwatch.MathExpression(
            expression=f"SUM({refused_search})", using_metrics={}, label="all fields", period=FIVE_MINUTES
        )
        refused_per_hour = cloudwatch.MathExpression(
            expression=f"SELECT SUM(RefusedValues) FROM SCHEMA(\"{self.namespace}\", field, service) "
            "WHERE service = 'predict'",
            using_metrics={},
            label="RefusedValues, all fields",
            period=REFUSED_VALUES_PERIOD,
        )

        for index, predict in enumerate(predicts):
            suffix = "" if index == 0 else f"-{predict.model_name}"
            which = "The predict URL" if len(predicts) == 1 else f"The predict URL of {predict.model_name}"
            predict_logs = predict.image.log_group.log_group_name
            url_5xx, champion_unavailable = per_model[predict.model_name]
            alerts.alarm_when(
                f"PredictUrl5xx{suffix}",
                metric=url_5xx,
                threshold=1,
                description=f"{which} answered 5xx (function errors, timeouts, throttles, or 503 from a champion "
                f"that cannot load or a capture that failed closed); see the log group {predict_logs}.",
            )
            alerts.alarm_when(
                f"ChampionUnavailable{suffix}",
                metric=champion_unavailable,
                threshold=1,
                description=f"Predict could not load the champion {predict.model_name} model and answered 503 "
                f"model_unavailable; the log line with champion_unavailable in {predict_logs} names the cause. Check "
                f"`sml models --model {predict.model_name}`, then `sml promote` or `sml rollback`.",
            )
        alerts.alarm_when(
            "ModelErrors",
            metric=model_errors,
            threshold=1,
            description="A champion model raised (or answered non-finite values) on input that passed validation, and "
            "predict answered 500 model_error; the log line with model_failure in its log group has the traceback. "
            "The model cannot serve that input: fix and register a new version, or `sml rollback`.",
        )
        alerts.alarm_when(
            "ChampionRefreshFailures",
            metric=refresh_failures,
            threshold=1,
            description="A warm predict container could not load the version the champion pointer names (after a "
            "promotion or rollback) and keeps serving the previous one; the log line with champion_refresh_failure "
            "names the cause. Promote a version that loads, or `sml rollback`.",
        )
        alerts.alarm_when(
            "CaptureMisses",
            metric=capture_misses,
            threshold=1,
            description="Predict answered but could not send prediction events to the queue; they are in its log "
            "(capture_miss). Export them and run `sml capture resend` (docs/deploy.md, operating notes).",
        )
        alerts.alarm_when(
            "RefusedValues",
            metric=refused_per_hour,
            threshold=config.alarm_refused_values,
            description=f"Predict refused {config.alarm_refused_values} or more feature values with a 4xx within an "
            "hour (RefusedValues, all fields): a client sends data the model's schema does not accept. The "
            "dashboard's refused-values graph names the fields; the refusal events are in the database.",
        )
        alerts.alarm_when(
            "WriterThrottles",
            metric=writer_throttles,
            threshold=1,
            description="Lambda throttled the writer: the account's concurrency is exhausted. Events wait in the "
            "queue; raise the account quota or lower other functions' concurrency.",
        )
        alerts.alarm_when(
            "DriftDidNotRun",
            metric=drift_invocations,
            threshold=1,
            below=True,
            missing_data_breaches=True,
            evaluation_periods=DRIFT_SILENCE_PERIODS,
            description="The weekly drift job has not run for a week or more: check the EventBridge rule and the "
            "drift function. (Also in ALARM after the first deploy until the first Monday run.)",
        )
        alerts.alarm_when(
            "DatabaseFreeStorageLow",
            metric=free_storage,
            threshold=FREE_STORAGE_ALARM_BYTES,
            below=True,
            evaluation_periods=FREE_STORAGE_ALARM_PERIODS,
            description=f"The database has had less than {FREE_STORAGE_ALARM_BYTES / 2**30:g} GiB free for an hour: storage "
            f"autoscaling did not add space (it stops at {MAX_ALLOCATED_STORAGE_GIB} GiB and pauses 6 hours after each "
            "increase). Check AllocatedStorage with `aws rds describe-db-instances`; raise max_allocated_storage or "
            "delete old predictions.",
        )

        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=config.deployed_app_name,
            default_interval=cdk.Duration.days(7),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Predictions served (all models) and URL 5xx and champion failures per model",
                left=[
                    self._custom("predict", "PredictionsServed"),
                    *(url_5xx.with_(label=f"URL 5xx {model}") for model, (url_5xx, _) in per_model.items()),
                ],
                right=[
                    *(champion.with_(label=f"champion unavailable {model}") for model, (_, champion) in per_model.items()),
                    model_errors.with_(label="model errors (500)"),
                    refresh_failures.with_(label="champion refresh failures"),
                ],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Refused feature values (4xx): all fields and per field",
                left=[refused_total, refused_per_field],
                width=8,
            ),
            cloudwatch.GraphWidget(title="Capture misses", left=[capture_misses], width=8),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Events queue: depth and oldest event (s)",
                left=[events.queue.metric_approximate_number_of_messages_visible(period=FIVE_MINUTES)],
                right=[events.queue.metric_approximate_age_of_oldest_message(period=FIVE_MINUTES)],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Dead-letter queue depth",
                left=[events.dead_letter_queue.metric_approximate_number_of_messages_visible(period=FIVE_MINUTES)],
                width=12,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Writer: rows stored and records failed",
                left=[self._custom("writer", "rows_inserted"), self._custom("writer", "records_failed")],
                right=[writer_throttles],
                width=12,
            ),
            cloudwatch.GraphWidget(title="Database free storage (bytes)", left=[free_storage], width=12),
        )
        self.dashboard.add_widgets(
            cloudwatch.LogQueryWidget(
                title="Drift status per run",
                log_group_names=[drift.image.log_group.log_group_name],
                query_lines=[
                    "fields @timestamp, drift_run.model_name, drift_run.status, drift_run.model_version, drift_run.run_id",
                    "filter ispresent(drift_run.status)",
                    "sort @timestamp desc",
                    "limit 20",
                ],
                width=24,
            )
        )

    def _predict_metrics(self, predict: Predict, *, first: bool) -> tuple[cloudwatch.IMetric, cloudwatch.IMetric]:
        """(URL 5xx, champion unavailable) of one model's predict, summed over five minutes, labelled with the model."""
        url_5xx = cloudwatch.Metric(
            namespace="AWS/Lambda",
            metric_name="Url5xxCount",
            dimensions_map={"FunctionName": predict.function.function_name},
            statistic=cloudwatch.Stats.SUM,
            period=FIVE_MINUTES,
        )
        champion_filter = logs.MetricFilter(
            self,
            "ChampionUnavailableFilter" if first else f"ChampionUnavailableFilter-{predict.model_name}",
            log_group=predict.image.log_group,
            filter_pattern=logs.FilterPattern.literal(CHAMPION_UNAVAILABLE_PATTERN),
            metric_namespace=self.namespace,
            # One metric per model: a filter publishes no dimension predict's log line does not carry.
            metric_name="ChampionUnavailable" if first else f"ChampionUnavailable-{predict.model_name}",
            metric_value="1",
        )
        champion = champion_filter.metric(statistic=cloudwatch.Stats.SUM, period=FIVE_MINUTES)
        return url_5xx, champion

    def _custom(self, service: str, name: str) -> cloudwatch.Metric:
        """A Powertools metric of ``service``, summed over five minutes."""
        return cloudwatch.Metric(
            namespace=self.namespace,
            metric_name=name,
            dimensions_map={"service": service},
            statistic=cloudwatch.Stats.SUM,
            period=FIVE_MINUTES,
        )
