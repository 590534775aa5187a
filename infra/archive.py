"""The event archive on AWS: Glue tables over ``archive/`` with partition projection, an Athena
workgroup, and the archive function that converts and compacts.

The writer lands each batch it stored in one object under ``s3://<bucket>/archive/landing/``
(``sml.archive.landing``), the only place it may write in the archive. The archive function
(:class:`ArchiveCompaction`) converts those into Parquet under
``s3://<bucket>/archive/<table>/model=<model>/date=<day>/`` every five minutes and compacts each
day's objects once a day. The tables' locations are the tables' folders, so no query reads the
landing area. Partition projection computes the partitions from the table's properties (the
deployment's models, every day since ``PROJECTION_START``), so no crawler runs and no partition
is ever added.

**Columns.** Each table declares every column the archive writes that is known at deploy time:
all of ``sml.archive.parquet``'s fixed columns of that table (:data:`COMMON_COLUMNS`, checked
against them by the infra tests) and the partition keys. What cannot be known then: a model's
``f_<feature>`` and ``p_<class>`` columns, which come from the versions registered later (any
time, without a deploy) and differ between them. Athena maps Parquet columns by name, so files
of several versions share the table and a file without a declared column reads it as NULL; a
new feature or class is added with ``ALTER TABLE <table> ADD COLUMNS (f_<feature> double, ...)``
(the Athena window source names the statement when a feature it needs is missing). Schema
evolution is additive only: the archive writes numbers as double whatever the version and leaves
out a feature a whole object holds only nulls of, so a column keeps its type between files; a
column is never dropped or renamed (a version without it leaves it NULL). Two cases still give a
column two types, which Athena refuses for the files of the other type (HIVE_BAD_DATA) and
DuckDB reads as text: a feature whose kind changes between versions (text in one, numbers in the
next; give it a new name instead) and an integer beyond 2**53, archived as JSON text to stay exact. Partition projection needs no change for any of this, only for a model added
to the deployment (its enum of models, redeployed with it).

The workgroup runs engine version 3, refuses a query past ``archive_scan_limit_bytes``
(``BytesScannedCutoffPerQuery``; Athena bills $5 per TB scanned), writes results encrypted
under ``athena-results/`` of the same bucket (expired after a week) and enforces that on every
query.
"""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_athena as athena
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra import names
from infra.image_function import ImageFunction
from infra.model_registry import ModelRegistry
from infra.nag import acknowledge

PROJECTION_START = "2026-01-01"
# Daily 00:45 UTC: yesterday's objects are closed (a late one is left for a later run, untouched).
# The run converts what has landed first, then compacts.
COMPACTION_SCHEDULE = events.Schedule.cron(minute="45", hour="0")
# Every 5 minutes (minutes 2, 7, ..., 57): the writer's landing objects become Parquet. Freshness
# against invocations: an event is in the tables' folders within ~5 minutes (plus the conversion)
# of being stored, for 288 invocations a day, each a LIST and the batches since the one before; a
# minute (EventBridge's finest rate) would be 1,440, most finding little. Amazon Data Firehose, the
# managed way to the same Parquet, holds records for its buffering interval: 300 s by default, at
# most 900 (BufferingHints, Firehose API Reference). Off the daily run's minute, so its conversion
# and a five-minute one do not start together.
CONVERSION_SCHEDULE = events.Schedule.cron(minute="2/5")
# What the conversion rule sends (functions/drift/compact.py's CONVERT_ACTION).
CONVERT_EVENT = {names.EVENT_SML_ACTION: "convert"}
COMPACTION_MEMORY_MIB = 2048
# /tmp of the compaction function, Lambda's most: a model version's day is downloaded, rewritten and
# spilled there (sml.archive.store.compact_partition), ~2.5x its size, so ~15M events (~277 B each)
# per model version and day fit where the default 512 MiB held under a million. ~$0.0003 a run.
COMPACTION_EPHEMERAL_MIB = 10_240
# Athena calls a query's caller makes (sml.archive.query.athena_rows); Stop for a cancelled run.
ATHENA_QUERY_ACTIONS = ["athena:StartQueryExecution", "athena:GetQueryExecution", "athena:GetQueryResults", "athena:StopQueryExecution"]
# What Athena reads from the Glue Data Catalog with its caller's permissions (information_schema included).
GLUE_READ_ACTIONS = ["glue:GetDatabase", "glue:GetDatabases", "glue:GetTable", "glue:GetTables", "glue:GetPartition", "glue:GetPartitions"]
ENGINE_VERSION = "Athena engine version 3"
COMMON_COLUMNS = {
    "predictions": [
        ("prediction_id", "string"), ("schema_version", "smallint"), ("model_name", "string"), ("model_version", "string"),
        ("predicted_at", "timestamp"), ("prediction", "string"), ("stored_at", "timestamp"),
    ],
    "ground_truth": [("prediction_id", "string"), ("label", "string"), ("labelled_at", "timestamp"), ("source", "string"), ("stored_at", "timestamp")],
    "predict_refusals": [
        ("refusal_id", "string"), ("field_name", "string"), ("reason", "string"), ("refused_count", "int"), ("model_name", "string"),
        ("model_version", "string"), ("refused_at", "timestamp"), ("stored_at", "timestamp"),
    ],
}


class ArchiveQueries(Construct):
    """The Glue database and tables of the archive and the Athena workgroup that queries them."""

    def __init__(self, scope: Construct, construct_id: str, *, app_name: str, bucket_name: str, model_names: Sequence[str], scan_limit_bytes: int) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.database_name = f"{app_name.replace('-', '_')}_archive"
        self.workgroup_name = f"{app_name}-archive"
        database = glue.CfnDatabase(self, "Database", catalog_id=stack.account, database_input=glue.CfnDatabase.DatabaseInputProperty(name=self.database_name))
        for table, columns in COMMON_COLUMNS.items():
            with_model = table != "ground_truth"
            location = f"s3://{bucket_name}/{names.ARCHIVE_PREFIX}{table}/"
            template = location + ("model=${model}/" if with_model else "") + "date=${date}/"
            parameters = {
                "classification": "parquet",
                "projection.enabled": "true",
                "projection.date.type": "date",
                "projection.date.format": "yyyy-MM-dd",
                "projection.date.range": f"{PROJECTION_START},NOW",
                "projection.date.interval": "1",
                "projection.date.interval.unit": "DAYS",
                "storage.location.template": template,
            }
            if with_model:
                parameters |= {"projection.model.type": "enum", "projection.model.values": ",".join(model_names)}
            partition_keys = [glue.CfnTable.ColumnProperty(name="model", type="string")] if with_model else []
            partition_keys.append(glue.CfnTable.ColumnProperty(name="date", type="string"))
            resource = glue.CfnTable(
                self,
                f"Table{table.title().replace('_', '')}",
                catalog_id=stack.account,
                database_name=self.database_name,
                table_input=glue.CfnTable.TableInputProperty(
                    name=table,
                    table_type="EXTERNAL_TABLE",
                    parameters=parameters,
                    partition_keys=partition_keys,
                    storage_descriptor=glue.CfnTable.StorageDescriptorProperty(
                        columns=[glue.CfnTable.ColumnProperty(name=name, type=kind) for name, kind in columns],
                        location=location,
                        input_format="org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
                        output_format="org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
                        serde_info=glue.CfnTable.SerdeInfoProperty(serialization_library="org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"),
                    ),
                ),
            )
            resource.add_dependency(database)
        self.workgroup = athena.CfnWorkGroup(
            self,
            "WorkGroup",
            name=self.workgroup_name,
            description=f"{app_name}: questions over the event archive (sml query)",
            recursive_delete_option=True,
            work_group_configuration=athena.CfnWorkGroup.WorkGroupConfigurationProperty(
                engine_version=athena.CfnWorkGroup.EngineVersionProperty(selected_engine_version=ENGINE_VERSION),
                bytes_scanned_cutoff_per_query=scan_limit_bytes,
                enforce_work_group_configuration=True,
                publish_cloud_watch_metrics_enabled=True,
                result_configuration=athena.CfnWorkGroup.ResultConfigurationProperty(
                    output_location=f"s3://{bucket_name}/{names.ATHENA_RESULTS_PREFIX}",
                    encryption_configuration=athena.CfnWorkGroup.EncryptionConfigurationProperty(encryption_option="SSE_S3"),
                ),
            ),
        )

    def grant_query(self, role: iam.IRole, registry: ModelRegistry) -> None:
        """Let ``role`` run queries in the workgroup over the archive's tables: the Athena calls on
        the workgroup only, Glue reads of its catalog, database and tables only, and the S3 that
        Athena touches with its caller's permissions (the archive read, the results location)."""
        stack = cdk.Stack.of(self)
        workgroup_arn = stack.format_arn(service="athena", resource="workgroup", resource_name=self.workgroup_name)
        role.add_to_principal_policy(iam.PolicyStatement(actions=ATHENA_QUERY_ACTIONS, resources=[workgroup_arn]))
        tables = stack.format_arn(service="glue", resource="table", resource_name=f"{self.database_name}/*")
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=GLUE_READ_ACTIONS,
                resources=[
                    stack.format_arn(service="glue", resource="catalog"),
                    stack.format_arn(service="glue", resource="database", resource_name=self.database_name),
                    tables,
                ],
            )
        )
        acknowledge(
            role,
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:glue:<AWS::Region>:<AWS::AccountId>:table/{self.database_name}/*]",
            "Read-only on the tables of the archive's own Glue database, which holds nothing else.",
        )
        registry.grant_archive_read(role)
        registry.grant_athena_results(role)


class ArchiveCompaction(Construct):
    """The archive function (``functions/drift/compact.py``; ``sml compact`` runs the same conversion and compaction):
    the drift image with another entry point, outside the VPC (it needs S3 only, through no
    database), allowed to read, write and delete under ``archive/`` and nothing else. Every five
    minutes EventBridge sends it ``{"sml_action": "convert"}``: the writer's landing objects
    (``archive/landing/``) become the tables' Parquet objects and are deleted. Daily it converts,
    then compacts the day before.

    No reserved concurrency, although two conversions at once do each other's work: a reservation,
    even of 1, must leave the account 100 unreserved, so it would stop the default deployment (which
    reserves nothing) in an account whose quota is 10, as a new account's may be (see
    ``infra/preflight.py``). Runs meet only when one lasts more than five minutes (a backlog of
    landing objects after the function was failing, or more batches than one converter keeps up
    with: ``bench/archive_bench.py`` measures its rate); the daily run's conversion starts two
    minutes before the next five-minute one. When they do meet, the data is safe: both put the same
    keys with the same bytes and delete a landing object only after its Parquet objects were put;
    the cost is requests done twice (a landing object the other run deleted after this one listed
    it is skipped, not reported).
    """

    def __init__(self, scope: Construct, construct_id: str, *, app_name: str, registry: ModelRegistry) -> None:
        super().__init__(scope, construct_id)
        self.image = ImageFunction(
            self,
            "Image",
            dockerfile=names.DRIFT_DOCKERFILE,
            command=names.COMPACT_COMMAND,
            description=f"{app_name} archive: converts the writer's landed events to Parquet, merges each day's small objects",
            environment={
                names.ENV_APP_NAME: app_name,
                names.ENV_BUCKET: registry.bucket.bucket_name,
                names.ENV_ARCHIVE_PREFIX: names.ARCHIVE_PREFIX,
                names.ENV_POWERTOOLS_SERVICE_NAME: "compact",
                names.ENV_POWERTOOLS_METRICS_NAMESPACE: app_name,
            },
            memory_mib=COMPACTION_MEMORY_MIB,
            ephemeral_storage_mib=COMPACTION_EPHEMERAL_MIB,
            timeout=cdk.Duration.minutes(15),
        )
        self.function = self.image.function
        # The tables' folders (compaction) and archive/landing/ (conversion: get, then delete).
        registry.grant_archive_compact(self.image.role)
        self.schedule = events.Rule(
            self,
            "Daily",
            schedule=COMPACTION_SCHEDULE,
            description=f"Converts the landed events and compacts yesterday's event archive of {app_name}",
            targets=[targets.LambdaFunction(self.function, retry_attempts=2)],
        )
        self.conversion_schedule = events.Rule(
            self,
            "Conversion",
            schedule=CONVERSION_SCHEDULE,
            description=f"Converts the events the writer of {app_name} landed into the archive's Parquet objects",
            targets=[targets.LambdaFunction(self.function, event=events.RuleTargetInput.from_object(CONVERT_EVENT), retry_attempts=2)],
        )
