"""Every name the deployment shares with the application code, in one place.

The environment variable names are the settings contract of ``sml.core.settings``; the S3 prefixes and
the SSM parameter are the model registry layout the CLI and the functions agree on.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# Context keys (cdk.json "context" or `cdk synth -c key=value`).
CTX_ENVIRONMENT = "environment"
CTX_APP_NAME = "app_name"
CTX_MODEL_NAME = "model_name"
CTX_MODELS = "models"
CTX_ALERT_EMAIL = "alert_email"
CTX_FUNCTION_URL_AUTH = "function_url_auth"
CTX_CAPTURE_SAMPLING_RATE = "capture_sampling_rate"
CTX_CAPTURE_MODE = "capture_mode"
CTX_DB_INSTANCE_SIZE = "db_instance_size"
CTX_DB_MULTI_AZ = "db_multi_az"
CTX_DB_BACKUP_RETENTION_DAYS = "db_backup_retention_days"
CTX_DELETION_PROTECTION = "deletion_protection"
CTX_WRITER_BATCH_SIZE = "writer_batch_size"
CTX_ARCHIVE_SCAN_LIMIT_BYTES = "archive_scan_limit_bytes"
CTX_DRIFT_WINDOW_SOURCE = "drift_window_source"
CTX_WRITER_BATCHING_WINDOW_SECONDS = "writer_batching_window_seconds"
CTX_WRITER_MAX_CONCURRENCY = "writer_max_concurrency"
CTX_PREDICT_RESERVED_CONCURRENCY = "predict_reserved_concurrency"
CTX_DRIFT_FEATURE_FLOORS = "drift_feature_floors"
CTX_DQ_MAX_OUT_OF_RANGE = "dq_max_out_of_range"
CTX_DQ_MAX_UNSEEN_CATEGORY = "dq_max_unseen_category"
CTX_DQ_MAX_MISSING_EXCESS = "dq_max_missing_excess"
CTX_DQ_MAX_REFUSED_RATE = "dq_max_refused_rate"
CTX_PREDICT_RANGE_WARNINGS = "predict_range_warnings"
CTX_CHAMPION_TTL_SECONDS = "champion_ttl_seconds"
CTX_ALARM_REFUSED_VALUES = "alarm_refused_values"
CTX_AVAILABILITY_ZONES = "availability_zones"
CTX_RETENTION_DAYS = "retention_days"
CTX_LABEL_HORIZON_DAYS = "label_horizon_days"
CTX_DRIFT_MEMORY_MIB = "drift_memory_mib"
CTX_DRIFT_TIMEOUT_MINUTES = "drift_timeout_minutes"

# Environment variables read by sml.core.settings.
ENV_APP_NAME = "SML_APP_NAME"
ENV_MODEL_NAME = "SML_MODEL_NAME"
ENV_BUCKET = "SML_BUCKET"
ENV_QUEUE_URL = "SML_QUEUE_URL"
ENV_TOPIC_ARN = "SML_TOPIC_ARN"
ENV_CAPTURE_SAMPLING_RATE = "SML_CAPTURE_SAMPLING_RATE"
ENV_CAPTURE_FAIL_CLOSED = "SML_CAPTURE_FAIL_CLOSED"
ENV_CAPTURE_MODE = "SML_CAPTURE_MODE"
ENV_DB_SECRET_ARN = "SML_DB_SECRET_ARN"
ENV_DB_HOST = "SML_DB_HOST"
ENV_DB_NAME = "SML_DB_NAME"
ENV_DB_USER = "SML_DB_USER"
ENV_WRITER_DB_SECRET_ARN = "SML_WRITER_DB_SECRET_ARN"
ENV_DRIFT_DB_SECRET_ARN = "SML_DRIFT_DB_SECRET_ARN"
ENV_DRIFT_WINDOW_DAYS = "SML_DRIFT_WINDOW_DAYS"
ENV_RETENTION_DAYS = "SML_RETENTION_DAYS"
ENV_LABEL_HORIZON_DAYS = "SML_LABEL_HORIZON_DAYS"
ENV_DRIFT_FEATURE_FLOORS = "SML_DRIFT_FEATURE_FLOORS"
ENV_DQ_MAX_OUT_OF_RANGE = "SML_DQ_MAX_OUT_OF_RANGE"
ENV_DQ_MAX_UNSEEN_CATEGORY = "SML_DQ_MAX_UNSEEN_CATEGORY"
ENV_DQ_MAX_MISSING_EXCESS = "SML_DQ_MAX_MISSING_EXCESS"
ENV_DQ_MAX_REFUSED_RATE = "SML_DQ_MAX_REFUSED_RATE"
ENV_PREDICT_RANGE_WARNINGS = "SML_PREDICT_RANGE_WARNINGS"
ENV_CHAMPION_TTL_SECONDS = "SML_CHAMPION_TTL_SECONDS"
ENV_REPORT_PREFIX = "SML_REPORT_PREFIX"
ENV_POWERTOOLS_SERVICE_NAME = "POWERTOOLS_SERVICE_NAME"
ENV_POWERTOOLS_METRICS_NAMESPACE = "POWERTOOLS_METRICS_NAMESPACE"

# The key of a drift event (the weekly rule's input) that names the model to check; without it the
# drift function checks SML_MODEL_NAME.
EVENT_MODEL_NAME = "model_name"
# A direct or scheduled invocation's action (the writer's migrate and retention, the drift function's daily step).
EVENT_SML_ACTION = "sml_action"

# Lambda entry points and their Dockerfiles (build context: the repository root).
PREDICT_DOCKERFILE = "functions/predict/Dockerfile"
WRITER_DOCKERFILE = "functions/writer/Dockerfile"
DRIFT_DOCKERFILE = "functions/drift/Dockerfile"
# What each image's asset leaves out beyond .dockerignore (Docker-style patterns): the other functions'
# folders, and sql/ for predict, which never reads the schema. The asset's content is the image's
# hash, so a change there no longer rebuilds and redeploys an image that does not use it.
IMAGE_EXCLUDES = {
    PREDICT_DOCKERFILE: ("functions/writer", "functions/drift", "sql"),
    WRITER_DOCKERFILE: ("functions/predict", "functions/drift"),
    DRIFT_DOCKERFILE: ("functions/predict", "functions/writer"),
}

# Model registry layout: s3://<bucket>/models/<model>/<version>/..., reports under reports/.
MODELS_PREFIX = "models/"
REPORTS_PREFIX = "reports/"
# The event archive (Parquet, sml.archive) under archive/ of the same bucket; the writer lands its batches there.
ARCHIVE_PREFIX = "archive/"
# Where the writer lands its batches (sml.archive.landing.landing_prefix), outside every table's folder.
ARCHIVE_LANDING_PREFIX = ARCHIVE_PREFIX + "landing/"
ENV_ARCHIVE_PREFIX = "SML_ARCHIVE_PREFIX"
ENV_WINDOW_SOURCE = "SML_WINDOW_SOURCE"
ENV_ATHENA_WORKGROUP = "SML_ATHENA_WORKGROUP"
ENV_ATHENA_DATABASE = "SML_ATHENA_DATABASE"
# The archive function (conversion and compaction): the drift image (it has DuckDB) with this entry point.
COMPACT_COMMAND = ["functions.drift.compact.handler"]
ATHENA_RESULTS_PREFIX = "athena-results/"
DB_NAME = "sml"
DB_ADMIN_USER = "sml_admin"  # the RDS master user: only the migration step logs in as it
# Each database function's own user (grants: sml.core.db.FUNCTION_GRANTS, keyed like this).
DB_FUNCTION_USERS = {"writer": "sml_writer", "drift": "sml_drift"}


def deployed_app_name(app_name: str, environment: str) -> str:
    """The ``SML_APP_NAME`` of one deployment, so environments in one account never share names.

    :param app_name: the application name (context ``app_name``), e.g. ``sml``.
    :param environment: the environment name (context ``environment``), e.g. ``dev``.
    :returns: ``<app>-<environment>``, e.g. ``sml-dev``.
    """
    return f"{app_name}-{environment}"


def champion_parameter_name(app_name: str, model_name: str) -> str:
    """The SSM parameter naming the version predict serves: ``/<app>/<model>/champion``."""
    return f"/{app_name}/{model_name}/champion"
