"""Deployment options from CDK context, validated before any resource is built.

Values come from ``cdk.json`` (typed JSON) or ``cdk synth -c key=value`` (always strings), so each
parser accepts both. A bad value raises :class:`ContextError` naming the context key. This module
does not import aws_cdk, so it is cheap to test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from infra import names

FUNCTION_URL_AUTH_TYPES = ("AWS_IAM", "NONE")
PRODUCTION = "prod"  # the environment name whose defaults are production's (see environment_defaults)
# SML_CAPTURE_MODE: send after the response (internal extension, post-runtime phase) or before it.
CAPTURE_MODES = ("after_response", "inline")
# sml.monitoring.sources.SOURCES
WINDOW_SOURCES = ("database", "duckdb", "athena")

# Memory of the burstable Graviton (db.t4g.*) sizes, in GiB.
DB_MEMORY_GIB = {"micro": 1, "small": 2, "medium": 4, "large": 8, "xlarge": 16, "2xlarge": 32}

# RDS for MySQL's default max_connections is DBInstanceClassMemory / 12582880 bytes.
_BYTES_PER_MYSQL_CONNECTION = 12_582_880

# Connections the writer may not take: drift, the migration call and an operator's session.
_RESERVED_CONNECTIONS = 3

_MIN_WRITER_CONCURRENCY = 2  # the lowest maximum concurrency Lambda accepts for an SQS source


class ContextError(ValueError):
    """A CDK context value that cannot be deployed; the message names the context key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"context {key}: {problem}")
        self.key = key


@dataclass(frozen=True)
class DeploymentConfig:
    """Everything that differs between two deployments of the stack."""

    environment: str = "dev"
    app_name: str = "sml"
    model_name: str = "breast-cancer"
    alert_email: str | None = None
    function_url_auth: str = "AWS_IAM"
    capture_sampling_rate: float = 1.0
    capture_mode: str = "after_response"
    db_instance_size: str = "micro"
    db_multi_az: bool = False
    db_backup_retention_days: int = 7
    # On in prod only (environment_defaults): elsewhere a failed first deploy must be able to roll the instance back.
    deletion_protection: bool = False
    # ~250+ records per call saturate the database locally; 500 doubles throughput per invocation over
    # 100 with 0.5 ms of database round trip (bench/writer_bench.py), at ~1 MB per 500 events.
    writer_batch_size: int = 500
    writer_batching_window_seconds: int = 5
    writer_max_concurrency: int = 5
    # Athena refuses an archive query past this many bytes scanned (its minimum cutoff is 10 MB; $5 per TB scanned).
    archive_scan_limit_bytes: int = 10_000_000_000
    # Where the weekly run reads its window (SML_WINDOW_SOURCE): database, duckdb (the archive in S3) or athena.
    drift_window_source: str = "database"
    # Reserved (and so maximum) concurrency of predict when function_url_auth=NONE.
    predict_reserved_concurrency: int = 20
    drift_feature_floors: str | None = None
    """JSON object feature -> drift floor (e.g. ``{"mean_texture": "0.1sd"}``), passed to the drift function."""
    predict_range_warnings: bool = False
    # How often a warm predict container re-reads the champion pointer: one SSM GetParameter each (docs/deploy.md).
    champion_ttl_seconds: int = 60
    # Data-quality thresholds of the drift function (shares in [0, 1]); unset keeps the application's
    # defaults, and a model's own drift config still takes precedence over them.
    dq_max_out_of_range: float | None = None
    dq_max_unseen_category: float | None = None
    dq_max_missing_excess: float | None = None
    dq_max_refused_rate: float | None = None
    # Feature values predict may refuse with a 4xx in one hour (RefusedValues summed over fields) before
    # the RefusedValues alarm fires. A count, not a share: see infra/monitoring.py for why.
    alarm_refused_values: int = 100
    # Availability Zone names for the VPC (two or more, one region); empty takes the first two that
    # Fn::GetAZs returns, which may include a zone without RDS Proxy (see infra/preflight.py).
    availability_zones: tuple[str, ...] = ()
    # Every model this deployment serves, each with its own predict function and Function URL; empty
    # serves model_name alone. The first keeps the single-model resource ids (its URL stays).
    models: tuple[str, ...] = ()
    # Days of predictions kept (the daily retention step); unset takes the application's default for
    # the window and the label horizon. A value under the minimum fails the deploy's migration step,
    # whose settings check names SML_RETENTION_DAYS (sml.core.retention.retention_limits).
    retention_days: int | None = None
    label_horizon_days: float = 7.0
    # The weekly run's function: memory (CPU scales with it) and timeout. docs/deploy.md gives the
    # measured limits per traffic level; the run refuses early, with its estimate, what would not fit.
    drift_memory_mib: int = 2048
    drift_timeout_minutes: int = 15

    @property
    def deployed_app_name(self) -> str:
        """``SML_APP_NAME`` of this deployment (``<app>-<environment>``)."""
        return names.deployed_app_name(self.app_name, self.environment)

    @property
    def model_names(self) -> tuple[str, ...]:
        """The models served, in context order: ``models``, or ``(model_name,)``."""
        return self.models or (self.model_name,)

    @property
    def stack_name(self) -> str:
        """CloudFormation stack name, e.g. ``sml-dev``."""
        return self.deployed_app_name

    @property
    def db_connection_budget(self) -> int:
        """Connections the writer may hold: half the instance's default max_connections, less reserves."""
        max_connections = DB_MEMORY_GIB[self.db_instance_size] * 2**30 // _BYTES_PER_MYSQL_CONNECTION
        return max_connections // 2 - _RESERVED_CONNECTIONS


Getter = Callable[[str], object]


def config_from_context(get: Getter) -> DeploymentConfig:
    """Read and validate the deployment options.

    :param get: returns the raw context value for a key, or ``None`` when unset
        (``app.node.try_get_context`` or ``dict.get``).
    :returns: the validated :class:`DeploymentConfig`; unset keys keep their defaults.
    :raises ContextError: naming the first key whose value cannot be used.
    """
    environment = _name(get, names.CTX_ENVIRONMENT, DeploymentConfig.environment, max_length=12)
    defaults = environment_defaults(environment)
    config = DeploymentConfig(
        environment=environment,
        app_name=_name(get, names.CTX_APP_NAME, defaults.app_name, max_length=16),
        model_name=_name(get, names.CTX_MODEL_NAME, defaults.model_name, max_length=63),
        alert_email=_email(get, names.CTX_ALERT_EMAIL),
        function_url_auth=_choice(
            get, names.CTX_FUNCTION_URL_AUTH, defaults.function_url_auth, FUNCTION_URL_AUTH_TYPES
        ),
        capture_sampling_rate=_number(
            get, names.CTX_CAPTURE_SAMPLING_RATE, defaults.capture_sampling_rate, float, 0.0, 1.0
        ),
        capture_mode=_choice(get, names.CTX_CAPTURE_MODE, defaults.capture_mode, CAPTURE_MODES),
        db_instance_size=_choice(get, names.CTX_DB_INSTANCE_SIZE, defaults.db_instance_size, tuple(DB_MEMORY_GIB)),
        db_multi_az=_flag(get, names.CTX_DB_MULTI_AZ, defaults.db_multi_az),
        db_backup_retention_days=_number(
            get, names.CTX_DB_BACKUP_RETENTION_DAYS, defaults.db_backup_retention_days, int, 1, 35
        ),
        deletion_protection=_flag(get, names.CTX_DELETION_PROTECTION, defaults.deletion_protection),
        writer_batch_size=_number(get, names.CTX_WRITER_BATCH_SIZE, defaults.writer_batch_size, int, 1, 10_000),
        archive_scan_limit_bytes=_number(
            get, names.CTX_ARCHIVE_SCAN_LIMIT_BYTES, defaults.archive_scan_limit_bytes, int, 10_000_000, 10**15
        ),
        drift_window_source=_choice(get, names.CTX_DRIFT_WINDOW_SOURCE, defaults.drift_window_source, WINDOW_SOURCES),
        writer_batching_window_seconds=_number(
            get, names.CTX_WRITER_BATCHING_WINDOW_SECONDS, defaults.writer_batching_window_seconds, int, 0, 300
        ),
        writer_max_concurrency=_number(
            get, names.CTX_WRITER_MAX_CONCURRENCY, defaults.writer_max_concurrency, int, _MIN_WRITER_CONCURRENCY, 1000
        ),
        predict_reserved_concurrency=_number(
            get, names.CTX_PREDICT_RESERVED_CONCURRENCY, defaults.predict_reserved_concurrency, int, 1, 1000
        ),
        drift_feature_floors=_json_object(get, names.CTX_DRIFT_FEATURE_FLOORS),
        predict_range_warnings=_flag(get, names.CTX_PREDICT_RANGE_WARNINGS, defaults.predict_range_warnings),
        champion_ttl_seconds=_number(get, names.CTX_CHAMPION_TTL_SECONDS, defaults.champion_ttl_seconds, int, 1, 86_400),
        dq_max_out_of_range=_share(get, names.CTX_DQ_MAX_OUT_OF_RANGE),
        dq_max_unseen_category=_share(get, names.CTX_DQ_MAX_UNSEEN_CATEGORY),
        dq_max_missing_excess=_share(get, names.CTX_DQ_MAX_MISSING_EXCESS),
        dq_max_refused_rate=_share(get, names.CTX_DQ_MAX_REFUSED_RATE),
        alarm_refused_values=_number(
            get, names.CTX_ALARM_REFUSED_VALUES, defaults.alarm_refused_values, int, 1, 10_000_000
        ),
        availability_zones=_availability_zones(get, names.CTX_AVAILABILITY_ZONES),
        retention_days=_optional_number(get, names.CTX_RETENTION_DAYS, int, 1, 3660),
        label_horizon_days=_number(get, names.CTX_LABEL_HORIZON_DAYS, defaults.label_horizon_days, float, 0.0, 366.0),
        # Lambda's limits: 128 MiB to 10,240 MiB, at most 15 minutes.
        drift_memory_mib=_number(get, names.CTX_DRIFT_MEMORY_MIB, defaults.drift_memory_mib, int, 128, 10_240),
        drift_timeout_minutes=_number(get, names.CTX_DRIFT_TIMEOUT_MINUTES, defaults.drift_timeout_minutes, int, 1, 15),
        models=_models(get, names.CTX_MODELS),
    )
    if config.models and _raw(get, names.CTX_MODEL_NAME) is not None and config.model_name not in config.models:
        raise ContextError(
            names.CTX_MODELS, f"model_name {config.model_name!r} is not one of {', '.join(config.models)}; give one or the other"
        )
    if config.models:
        config = replace(config, model_name=config.models[0])
    if config.writer_batch_size > 10 and config.writer_batching_window_seconds < 1:
        raise ContextError(
            names.CTX_WRITER_BATCHING_WINDOW_SECONDS,
            f"must be at least 1 when {names.CTX_WRITER_BATCH_SIZE} is above 10 (Lambda's rule for SQS sources)",
        )
    if config.writer_max_concurrency > config.db_connection_budget:
        raise ContextError(
            names.CTX_WRITER_MAX_CONCURRENCY,
            f"{config.writer_max_concurrency} is above the connection budget of db.t4g.{config.db_instance_size} "
            f"({config.db_connection_budget}); lower it or raise {names.CTX_DB_INSTANCE_SIZE}",
        )
    return config


def environment_defaults(environment: str) -> DeploymentConfig:
    """The defaults of one environment: :data:`PRODUCTION` gets a standby, 30 days of backups and RDS
    deletion protection.

    Deletion protection is off elsewhere: CloudFormation cannot delete a protected instance, so a
    failed first deploy would end in ``ROLLBACK_FAILED`` instead of rolling back. Any context key
    still overrides its default.
    """
    if environment == PRODUCTION:
        return DeploymentConfig(
            environment=environment, db_multi_az=True, db_backup_retention_days=30, deletion_protection=True
        )
    return DeploymentConfig(environment=environment)


def _raw(get: Getter, key: str) -> object | None:
    value = get(key)
    return None if value is None or value == "" else value


def _name(get: Getter, key: str, default: str, *, max_length: int) -> str:
    value = _raw(get, key)
    if value is None:
        return default
    text = str(value)
    if not re.fullmatch(rf"[a-z][a-z0-9-]{{0,{max_length - 1}}}", text):
        raise ContextError(
            key, f"{text!r} must be lower-case letters, digits and '-', start with a letter, at most {max_length} long"
        )
    return text


def _text_list(get: Getter, key: str, example: str) -> tuple[str, ...]:
    """A list from ``cdk.json`` (JSON array) or the CLI (comma-separated, or a JSON array as text)."""
    value = _raw(get, key)
    if value is None:
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                raise ContextError(key, f"{text!r} is not a JSON array; give e.g. {example}") from None
        else:
            value = [item.strip() for item in text.split(",") if item.strip()]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ContextError(key, f"{value!r} must be a list of names, e.g. {example}")
    if len(set(value)) != len(value):
        raise ContextError(key, f"{value!r} names one entry twice")
    return tuple(value)


MAX_MODELS = 10  # each model adds a function, a Function URL, alarms and a dashboard row


def _models(get: Getter, key: str) -> tuple[str, ...]:
    models = _text_list(get, key, "breast-cancer,wine")
    if len(models) > MAX_MODELS:
        raise ContextError(key, f"{len(models)} models; at most {MAX_MODELS} per deployment")
    for model in models:
        _name(lambda _key: model, key, "", max_length=63)
    return models


_AZ_NAME = re.compile(r"(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)[a-z]")


def _availability_zones(get: Getter, key: str) -> tuple[str, ...]:
    zones = _text_list(get, key, "us-east-1a,us-east-1b")
    if not zones:
        return ()
    for zone in zones:
        if not _AZ_NAME.fullmatch(zone):
            raise ContextError(key, f"{zone!r} is not an Availability Zone name such as us-east-1a")
    regions = {_AZ_NAME.fullmatch(zone)["region"] for zone in zones}
    if len(regions) > 1:
        raise ContextError(key, f"{', '.join(zones)} are in more than one region ({', '.join(sorted(regions))})")
    if len(zones) < 2:
        raise ContextError(key, "name at least two zones: RDS and its proxy need subnets in two Availability Zones")
    return zones


def _email(get: Getter, key: str) -> str | None:
    value = _raw(get, key)
    if value is None:
        return None
    text = str(value)
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", text):
        raise ContextError(key, f"{text!r} is not an email address")
    return text


def _json_object(get: Getter, key: str) -> str | None:
    value = _raw(get, key)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ContextError(key, f"{value!r} is not JSON; give an object such as {{\"mean_texture\": \"0.1sd\"}}") from None
    if not isinstance(value, dict):
        raise ContextError(key, f"{value!r} must be a JSON object of feature -> floor")
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _optional_number(get: Getter, key: str, kind: type[int] | type[float], low: float, high: float) -> float | None:
    """A number in [low, high], or ``None`` when unset (the application's default then holds)."""
    if _raw(get, key) is None:
        return None
    return _number(get, key, low, kind, low, high)


def _share(get: Getter, key: str) -> float | None:
    """A share in [0, 1], or ``None`` when unset (the application's default then holds)."""
    value = _optional_number(get, key, float, 0.0, 1.0)
    return None if value is None else float(value)


def _choice(get: Getter, key: str, default: str, choices: tuple[str, ...]) -> str:
    value = _raw(get, key)
    if value is None:
        return default
    if value not in choices:
        raise ContextError(key, f"{value!r} must be one of {', '.join(choices)}")
    return str(value)


def _flag(get: Getter, key: str, default: bool) -> bool:
    value = _raw(get, key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text not in ("true", "false"):
        raise ContextError(key, f"{value!r} must be true or false")
    return text == "true"


def _number(get: Getter, key: str, default: float, kind: type[int] | type[float], low: float, high: float) -> float:
    value = _raw(get, key)
    if value is None:
        return default
    if isinstance(value, bool):
        raise ContextError(key, f"{value!r} must be a number")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ContextError(key, f"{value!r} must be {'an integer' if kind is int else 'a number'}") from None
    if kind is int and isinstance(value, float) and value != number:
        raise ContextError(key, f"{value!r} must be an integer")
    if not low <= number <= high:
        raise ContextError(key, f"{number} must be between {low} and {high}")
    return number
