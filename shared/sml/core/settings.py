"""The one settings loader: environment variables (and the local stack file) into typed settings.

Every function and CLI command calls :func:`load_settings` with the settings class it needs, once,
at start. A missing or malformed variable raises :class:`SettingsError` whose message is one line
naming the variable. Secrets never come from here: on AWS the database password is read from
Secrets Manager by ARN (``SML_DB_SECRET_ARN``).

Precedence: environment variables, then ``.sml/stack.json`` written by ``sml up`` (local mode),
then the embedded defaults below.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

STACK_FILE = Path(".sml") / "stack.json"

# stack.json key -> environment variable it stands in for
STACK_KEYS = {
    "function_url": "SML_FUNCTION_URL",
    "aws_endpoint_url": "SML_AWS_ENDPOINT_URL",
    "aws_endpoint_url_s3": "SML_AWS_ENDPOINT_URL_S3",
    "aws_endpoint_url_sqs": "SML_AWS_ENDPOINT_URL_SQS",
    "aws_endpoint_url_sns": "SML_AWS_ENDPOINT_URL_SNS",
    "aws_endpoint_url_ssm": "SML_AWS_ENDPOINT_URL_SSM",
    "region": "AWS_REGION",
    "queue_url": "SML_QUEUE_URL",
    "dlq_url": "SML_DLQ_URL",
    "topic_arn": "SML_TOPIC_ARN",
    "bucket": "SML_BUCKET",
    "database_url": "SML_DATABASE_URL",
    "archive_prefix": "SML_ARCHIVE_PREFIX",
}


class SettingsError(ValueError):
    """A missing or malformed setting; the message names the environment variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"setting {variable}: {problem}")
        self.variable = variable
        self.problem = problem


class _Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=False, protected_namespaces=())


ENDPOINT_SERVICES = ("s3", "sqs", "sns", "ssm")  # the services the local endpoint serves; each may have its own URL


def service_endpoint_variable(service: str) -> str:
    """The variable that routes ``service`` to its own endpoint, named like botocore's ``AWS_ENDPOINT_URL_<SERVICE>``."""
    return f"SML_AWS_ENDPOINT_URL_{service.upper()}"


class AwsSettings(_Settings):
    """What every component needs to reach AWS (or a local endpoint in local mode).

    ``SML_AWS_ENDPOINT_URL`` sends every service to one endpoint; ``SML_AWS_ENDPOINT_URL_<SERVICE>``
    (S3, SQS, SNS, SSM) sends one service elsewhere and wins over it, as botocore's
    ``AWS_ENDPOINT_URL_<SERVICE>`` does over ``AWS_ENDPOINT_URL``.
    """

    app_name: str = Field("sml", alias="SML_APP_NAME", pattern=r"^[a-z][a-z0-9-]{0,30}$")
    model_name: str = Field("breast-cancer", alias="SML_MODEL_NAME", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    region: str = Field("us-east-1", alias="AWS_REGION", pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    aws_endpoint_url: str | None = Field(None, alias="SML_AWS_ENDPOINT_URL")
    aws_endpoint_url_s3: str | None = Field(None, alias="SML_AWS_ENDPOINT_URL_S3")
    aws_endpoint_url_sqs: str | None = Field(None, alias="SML_AWS_ENDPOINT_URL_SQS")
    aws_endpoint_url_sns: str | None = Field(None, alias="SML_AWS_ENDPOINT_URL_SNS")
    aws_endpoint_url_ssm: str | None = Field(None, alias="SML_AWS_ENDPOINT_URL_SSM")
    bucket: str = Field("sml-models", alias="SML_BUCKET", min_length=3, max_length=63)
    state_dir: Path = Field(Path(".sml"), alias="SML_STATE_DIR")

    @field_validator("aws_endpoint_url", "aws_endpoint_url_s3", "aws_endpoint_url_sqs", "aws_endpoint_url_sns", "aws_endpoint_url_ssm")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http(s) URL")
        return value

    def endpoint_url(self, service: str) -> str | None:
        """Where ``service``'s requests go: its own endpoint, else the common one; ``None`` is AWS itself."""
        return getattr(self, f"aws_endpoint_url_{service}", None) or self.aws_endpoint_url

    @property
    def champion_parameter(self) -> str:
        """SSM parameter holding the champion version of ``model_name``."""
        return f"/{self.app_name}/{self.model_name}/champion"


class DatabaseSettings(_Settings):
    """Where the database is: a URL locally, a Secrets Manager ARN on AWS (never a password)."""

    database_url: str | None = Field(None, alias="SML_DATABASE_URL")
    db_secret_arn: str | None = Field(None, alias="SML_DB_SECRET_ARN")
    db_host: str | None = Field(None, alias="SML_DB_HOST")
    db_name: str = Field("sml", alias="SML_DB_NAME")
    # IAM authentication as this database user (AWS, through RDS Proxy): no password anywhere.
    db_user: str | None = Field(None, alias="SML_DB_USER", pattern=r"^[A-Za-z0-9_]{1,32}$")

    @field_validator("database_url")
    @classmethod
    def _no_password(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if "://" not in value:
            raise ValueError("must be a SQLAlchemy URL such as sqlite:///.sml/sml.db or mysql+pymysql://user@host/db")
        if urlsplit(value).password:
            raise ValueError("must not contain a password; put the credentials in Secrets Manager and set SML_DB_SECRET_ARN")
        return value


class ArchiveSettings(_Settings):
    """Where the event archive lives: ``s3://<SML_BUCKET>/<SML_ARCHIVE_PREFIX>``; unset, the writer archives nothing."""

    archive_prefix: str | None = Field(None, alias="SML_ARCHIVE_PREFIX", pattern=r"^[A-Za-z0-9!_.*'()-][A-Za-z0-9!_.*'()/-]*/$")
    # Athena (AWS): the workgroup (engine v3, its own results location and scan limit) and the Glue database of the archive's tables.
    athena_workgroup: str | None = Field(None, alias="SML_ATHENA_WORKGROUP", pattern=r"^[A-Za-z0-9._-]{1,128}$")
    athena_database: str | None = Field(None, alias="SML_ATHENA_DATABASE", pattern=r"^[a-z0-9_]{1,255}$")


class CaptureSettings(_Settings):
    queue_url: str | None = Field(None, alias="SML_QUEUE_URL")
    capture_sampling_rate: float = Field(1.0, alias="SML_CAPTURE_SAMPLING_RATE", ge=0.0, le=1.0)
    capture_fail_closed: bool = Field(False, alias="SML_CAPTURE_FAIL_CLOSED")
    # after_response: an internal Lambda extension sends in the post-runtime phase; inline: before answering.
    capture_mode: Literal["after_response", "inline"] = Field("after_response", alias="SML_CAPTURE_MODE")


class PredictSettings(AwsSettings, CaptureSettings):
    max_instances: int = Field(100, alias="SML_MAX_INSTANCES", ge=1, le=10_000)
    max_body_bytes: int = Field(1_000_000, alias="SML_MAX_BODY_BYTES", ge=1_024)
    model_cache_dir: Path = Field(Path("/tmp/sml-models"), alias="SML_MODEL_CACHE_DIR")
    sklearn_version_policy: Literal["warn", "refuse"] = Field("warn", alias="SML_SKLEARN_VERSION_POLICY")
    range_warnings: bool = Field(False, alias="SML_PREDICT_RANGE_WARNINGS")
    # How often a warm container re-reads the champion pointer (one SSM GetParameter each time).
    champion_ttl_seconds: float = Field(60.0, alias="SML_CHAMPION_TTL_SECONDS", ge=1, le=86_400)


class RetentionSettings(_Settings):
    """How long ``predictions`` rows are kept (:mod:`sml.core.retention`), checked when loaded.

    ``SML_RETENTION_DAYS`` unset takes the default, and a value under the minimum is refused;
    both follow from the weekly run's window and the label horizon (:func:`sml.core.retention.retention_limits`).
    """

    window_days: float = Field(7.0, alias="SML_DRIFT_WINDOW_DAYS", gt=0, le=366)
    label_horizon_days: float = Field(7.0, alias="SML_LABEL_HORIZON_DAYS", ge=0, le=366)
    """How long after a prediction its label may still arrive, in days."""
    retention_days: int | None = Field(None, alias="SML_RETENTION_DAYS", ge=1, le=3660)

    @field_validator("retention_days")
    @classmethod
    def _at_least_the_minimum(cls, value: int | None, info: ValidationInfo) -> int | None:
        from sml.core.retention import retention_limits  # here: predict loads settings without SQLAlchemy

        if value is None or "window_days" not in info.data or "label_horizon_days" not in info.data:
            return value
        window, horizon = info.data["window_days"], info.data["label_horizon_days"]
        minimum = retention_limits(window, horizon).minimum
        if value < minimum:
            raise ValueError(
                f"{value} days is under the minimum of {minimum}: 2 windows (SML_DRIFT_WINDOW_DAYS={window:g}) "
                f"+ the label horizon (SML_LABEL_HORIZON_DAYS={horizon:g}) + 1 day, rounded up"
            )
        return value

    @property
    def effective_retention_days(self) -> int:
        """``SML_RETENTION_DAYS``, or the default for the window and label horizon."""
        from sml.core.retention import retention_limits

        return self.retention_days or retention_limits(self.window_days, self.label_horizon_days).default


class WriterSettings(AwsSettings, DatabaseSettings, RetentionSettings, ArchiveSettings):
    pass


class MigrateSettings(AwsSettings, DatabaseSettings, RetentionSettings):
    """The deploy's migration step: the secrets of the functions' database users it keeps in step."""

    writer_db_secret_arn: str | None = Field(None, alias="SML_WRITER_DB_SECRET_ARN")
    drift_db_secret_arn: str | None = Field(None, alias="SML_DRIFT_DB_SECRET_ARN")


class DriftSettings(AwsSettings, DatabaseSettings, ArchiveSettings):
    # Where the weekly run reads its window's drift summaries: the database, DuckDB over the event archive, or Athena over its Glue table.
    window_source: Literal["database", "duckdb", "athena"] = Field("database", alias="SML_WINDOW_SOURCE")
    # How long after a prediction its label may arrive: which of the archive's label days a window read from it takes.
    label_horizon_days: float = Field(7.0, alias="SML_LABEL_HORIZON_DAYS", ge=0, le=366)
    topic_arn: str | None = Field(None, alias="SML_TOPIC_ARN")
    window_days: float = Field(7.0, alias="SML_DRIFT_WINDOW_DAYS", gt=0, le=366)
    reference: Literal["training", "previous"] = Field("training", alias="SML_DRIFT_REFERENCE")
    fdr: float = Field(0.05, alias="SML_DRIFT_FDR", gt=0, lt=1)
    min_effect_numeric: float = Field(0.1, alias="SML_DRIFT_MIN_KS_D", gt=0, le=1)
    min_effect_categorical: float = Field(0.1, alias="SML_DRIFT_MIN_CRAMERS_V", gt=0, le=1)
    min_missing_rate_h: float = Field(0.2, alias="SML_DRIFT_MIN_MISSING_RATE_H", gt=0, lt=3.14159)
    min_samples: int = Field(30, alias="SML_DRIFT_MIN_SAMPLES", ge=2)
    feature_floors: dict[str, float | str] = Field(default_factory=dict, alias="SML_DRIFT_FEATURE_FLOORS")
    # Floors of the drift methods without a variable of their own, by their floor key in a model's
    # drift config (e.g. {"psi": 0.2}); the drift job checks the keys against the method registry.
    method_floors: dict[str, float | str] = Field(default_factory=dict, alias="SML_DRIFT_FLOORS")
    report_prefix: str = Field("reports/", alias="SML_REPORT_PREFIX")
    # A name of sml.lifecycle.quality_metrics (checked by the drift job); None: the model's task's default.
    quality_metric: str | None = Field(None, alias="SML_QUALITY_METRIC", min_length=1, max_length=32)
    quality_tolerance: float = Field(0.05, alias="SML_QUALITY_TOLERANCE", ge=0, le=1)
    quality_min_labels: int = Field(100, alias="SML_QUALITY_MIN_LABELS", ge=2)
    dq_max_out_of_range: float = Field(0.02, alias="SML_DQ_MAX_OUT_OF_RANGE", ge=0, le=1)
    dq_max_unseen_category: float = Field(0.01, alias="SML_DQ_MAX_UNSEEN_CATEGORY", ge=0, le=1)
    dq_max_missing_excess: float = Field(0.05, alias="SML_DQ_MAX_MISSING_EXCESS", ge=0, le=1)
    dq_max_refused_rate: float = Field(0.01, alias="SML_DQ_MAX_REFUSED_RATE", ge=0, le=1)
    replaced_missing_rate_diff: str | None = Field(None, alias="SML_DRIFT_MIN_MISSING_RATE_DIFF")
    """Read only to refuse it: the missing-rate floor is Cohen's h since issue 18."""

    @field_validator("feature_floors", mode="before")
    @classmethod
    def _floors_json(cls, value: object) -> object:
        # A JSON object such as {"mean_texture": "0.1sd", "grade": 0.05}; the drift job checks
        # the names against the model and the values against the feature's kind.
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValueError(f"must be a JSON object of feature -> floor ({exc})") from None
        if not isinstance(value, dict):
            raise ValueError('must be a JSON object of feature -> floor, e.g. {"mean_texture": "0.1sd"}')
        return value

    @field_validator("method_floors", mode="before")
    @classmethod
    def _method_floors_json(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValueError(f"must be a JSON object of a drift method's floor key -> floor ({exc})") from None
        if not isinstance(value, dict):
            raise ValueError("must be a JSON object of a drift method's floor key -> floor, e.g. {\"psi\": 0.2}")
        return value

    @field_validator("replaced_missing_rate_diff")
    @classmethod
    def _refuse_replaced(cls, value: str | None) -> None:
        if value is not None:
            raise ValueError(
                "was replaced by SML_DRIFT_MIN_MISSING_RATE_H (Cohen's h of the missing rate, default 0.2); unset it"
            )
        return None


class CompactionSettings(AwsSettings, ArchiveSettings):
    """The archive's daily compaction function: where the archive is (``SML_BUCKET``, ``SML_ARCHIVE_PREFIX``)."""


class LocalSettings(AwsSettings, DatabaseSettings, CaptureSettings, ArchiveSettings):
    """Everything the ``sml`` command line may touch."""

    function_url: str | None = Field(None, alias="SML_FUNCTION_URL")
    dlq_url: str | None = Field(None, alias="SML_DLQ_URL")
    topic_arn: str | None = Field(None, alias="SML_TOPIC_ARN")

    @model_validator(mode="after")
    def _default_database(self) -> LocalSettings:
        # The local file only when no setting names a database at all: SML_DB_USER/SML_DB_HOST
        # mean a database on AWS, which the command line must reach as the functions do, or refuse.
        if not any((self.database_url, self.db_secret_arn, self.db_user, self.db_host)):
            object.__setattr__(self, "database_url", f"sqlite:///{self.state_dir / 'sml.db'}")
        return self


S = TypeVar("S", bound=_Settings)


def read_stack_file(path: Path | None = None) -> dict[str, str]:
    """The endpoints written by ``sml up``, or ``{}`` when no local stack file exists.

    The file is ``$SML_STATE_DIR/stack.json`` (default ``.sml/stack.json``) unless ``path`` is given.
    """
    if path is None:
        state_dir = os.environ.get("SML_STATE_DIR")
        path = Path(state_dir) / "stack.json" if state_dir else STACK_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SettingsError(str(path), f"not valid JSON ({exc}); delete it or rerun `sml up`") from None
    if not isinstance(data, dict):
        raise SettingsError(str(path), "expected a JSON object")
    return data


def stack_as_environment(stack: Mapping[str, str]) -> dict[str, str]:
    return {STACK_KEYS[key]: str(value) for key, value in stack.items() if key in STACK_KEYS and value is not None}


def load_settings(cls: type[S], environ: Mapping[str, str] | None = None, stack: Mapping[str, str] | None = None) -> S:
    """Validate the settings of ``cls`` from ``environ`` (default ``os.environ``) over ``stack``.

    Empty variables count as unset. Raises :class:`SettingsError` naming the first bad variable.
    """
    environ = os.environ if environ is None else environ
    merged: dict[str, str] = stack_as_environment(stack or {})
    if environ.get("SML_AWS_ENDPOINT_URL"):
        # An endpoint given here replaces the stack's, all of it: no service stays on the stack's emulator.
        merged = {name: value for name, value in merged.items() if not name.startswith("SML_AWS_ENDPOINT_URL_")}
    if "AWS_REGION" not in environ and environ.get("AWS_DEFAULT_REGION"):
        merged["AWS_REGION"] = environ["AWS_DEFAULT_REGION"]
    merged.update({key: value for key, value in environ.items() if value != ""})
    try:
        return cls.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"][0] if first["loc"] else "settings"
        variable = _alias_of(cls, str(loc))
        shown = None if variable == "SML_DATABASE_URL" else merged.get(variable)
        detail = first["msg"] if shown is None else f"{first['msg']} (got {shown[:60]!r})"
        raise SettingsError(variable, detail) from None


def _alias_of(cls: type[_Settings], loc: str) -> str:
    field = cls.model_fields.get(loc)
    return field.alias if field is not None and field.alias else loc


def load_model_settings(cls: type[S], model_name: str | None = None, environ: Mapping[str, str] | None = None) -> S:
    """:func:`load_settings` of ``cls`` over ``.sml/stack.json``, for ``model_name`` instead of ``SML_MODEL_NAME`` when given
    (a command's ``--model``, ``sml.register(model_name=...)``).

    Raises :class:`SettingsError` naming the first bad variable (``SML_MODEL_NAME`` for a bad ``model_name``).
    """
    environ = os.environ if environ is None else environ
    if model_name is not None:
        environ = {**environ, "SML_MODEL_NAME": model_name}
    return load_settings(cls, environ=environ, stack=read_stack_file())
