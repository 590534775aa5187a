"""The event archive's query side: Glue tables over ``archive/`` with partition projection, and an Athena workgroup.

The writer appends Parquet under ``s3://<bucket>/archive/<table>/model=<model>/date=<day>/``
(``sml.archive``). Partition projection computes the partitions from the table's properties
(the deployment's models, every day since ``PROJECTION_START``), so no crawler runs and no
partition is ever added. The tables declare the columns every archive file has; a model's
``f_<feature>`` and ``p_<class>`` columns differ per model and version, and Athena maps Parquet
columns by name, so they are added with ``ALTER TABLE ... ADD COLUMNS`` when wanted.

The workgroup runs engine version 3, refuses a query past ``archive_scan_limit_bytes``
(``BytesScannedCutoffPerQuery``; Athena bills $5 per TB scanned), writes results encrypted
under ``athena-results/`` of the same bucket (expired after a week) and enforces that on every
query.
"""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_athena as athena
from aws_cdk import aws_glue as glue
from constructs import Construct

from infra import names

PROJECTION_START = "2026-01-01"
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
            name=f"{app_name}-archive",
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
