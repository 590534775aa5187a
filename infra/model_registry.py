"""The model registry: the bucket of model artifacts and drift reports, and the champion pointers.

Layout: ``models/<model>/<version>/{model.joblib,manifest.json}`` and ``reports/...``. The SSM
parameter ``/<app>/<model>/champion`` names the version predict serves. ``sml promote`` creates and
writes it; the stack only grants reading it. A CloudFormation-owned parameter would need a
placeholder value, which the registry would take for a version (it reads "no parameter" as "no
champion yet"), and a later deploy that touched the resource would reset the production champion.
"""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra import names
from infra.nag import acknowledge, resource_finding

NONCURRENT_VERSION_EXPIRATION = cdk.Duration.days(90)
ARCHIVE_NONCURRENT_EXPIRATION = cdk.Duration.days(1)
ATHENA_RESULTS_EXPIRATION = cdk.Duration.days(7)


class ModelRegistry(Construct):
    """Versioned, private, TLS-only bucket plus one champion parameter per model.

    :param app_name: ``SML_APP_NAME`` of the deployment (prefix of the parameters).
    :param model_names: the deployment's models; grants are scoped to the prefixes of the models named.
    """

    def __init__(self, scope: Construct, construct_id: str, *, app_name: str, model_names: Sequence[str]) -> None:
        super().__init__(scope, construct_id)
        self.app_name = app_name
        self.model_names = tuple(model_names)
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            encryption=s3.BucketEncryption.S3_MANAGED,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(noncurrent_version_expiration=NONCURRENT_VERSION_EXPIRATION),
                # The archive function deletes each landing object once converted and the small objects once
                # compacted; kept as noncurrent versions for 90 days they would double the archive's storage,
                # so under archive/ they go after a day, and then their delete markers (one per landing
                # object, which the conversion's LIST of archive/landing/ would otherwise step over for ever).
                # No rule expires or transitions a current object under archive/: a landing object stays
                # until it is converted.
                s3.LifecycleRule(
                    prefix=names.ARCHIVE_PREFIX, noncurrent_version_expiration=ARCHIVE_NONCURRENT_EXPIRATION, expired_object_delete_marker=True
                ),
                # Athena's query results (sml query on AWS): read once by the caller, then only storage.
                s3.LifecycleRule(
                    prefix=names.ATHENA_RESULTS_PREFIX, expiration=ATHENA_RESULTS_EXPIRATION, noncurrent_version_expiration=ARCHIVE_NONCURRENT_EXPIRATION
                ),
            ],
            # Model artifacts outlive the stack; docs/deploy.md says how to empty and delete the bucket.
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        acknowledge(
            self.bucket,
            "AwsSolutions-S1",
            "Only the deployer, the CLI and the functions' roles write here, and every change is kept as an object "
            "version; enable CloudTrail S3 data events where an access log is required.",
        )

    def champion_parameter_name(self, model_name: str) -> str:
        """The SSM parameter ``sml promote`` writes for ``model_name``: ``/<app>/<model>/champion``."""
        return names.champion_parameter_name(self.app_name, model_name)

    def champion_parameter_arn(self, model_name: str) -> str:
        return cdk.Stack.of(self).format_arn(
            service="ssm",
            resource="parameter",
            resource_name=self.champion_parameter_name(model_name).lstrip("/"),
            arn_format=cdk.ArnFormat.SLASH_RESOURCE_NAME,
        )

    @staticmethod
    def model_prefix(model_name: str) -> str:
        """Key prefix of a model's artifacts, e.g. ``models/breast-cancer/``."""
        return f"{names.MODELS_PREFIX}{model_name}/"

    def grant_model_read(self, role: iam.IRole, model_names: Sequence[str]) -> None:
        """Let ``role`` read the artifacts of ``model_names``, and list key names under their prefixes only.

        ``s3:ListBucket`` is limited by the ``s3:prefix`` condition key to ``models/<model>/``, so
        the role cannot enumerate other models or the reports. (S3 answers a GET of a missing key
        with 404 only to a caller allowed to list the bucket; a GET carries no ``s3:prefix``, so a
        missing artifact may show as 403 AccessDenied, which the registry names with the key.)
        """
        prefixes = [self.model_prefix(model) for model in model_names]
        for prefix in prefixes:
            self._allow_on_objects(role, ["s3:GetObject"], prefix)
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[self.bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [p for prefix in prefixes for p in (prefix, f"{prefix}*")]}},
            )
        )

    def grant_report_write(self, role: iam.IRole) -> None:
        """Let ``role`` write drift reports under ``reports/`` and read them back.

        Reading is for the alert's presigned link: a presigned URL carries its signer's permissions.
        """
        self._allow_on_objects(role, ["s3:PutObject", "s3:GetObject"], names.REPORTS_PREFIX)

    def grant_archive_landing(self, role: iam.IRole) -> None:
        """Let ``role`` put objects under ``archive/landing/`` (the writer's landing objects), and
        nothing else in the archive: the tables' folders are the archive function's alone."""
        self._allow_on_objects(role, ["s3:PutObject"], names.ARCHIVE_LANDING_PREFIX)

    def grant_archive_read(self, role: iam.IRole) -> None:
        """Let ``role`` read the archive: ``s3:GetObject`` under ``archive/`` and ``s3:ListBucket``
        limited by ``s3:prefix`` to it (a window's objects are found by listing its partitions)."""
        self._allow_on_objects(role, ["s3:GetObject"], names.ARCHIVE_PREFIX)
        self._allow_listing(role, names.ARCHIVE_PREFIX)

    def grant_archive_compact(self, role: iam.IRole) -> None:
        """Let ``role`` convert and compact the archive: read, write and delete under ``archive/``
        (the landing objects and the tables' folders) and list it, nothing else."""
        self._allow_on_objects(role, ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], names.ARCHIVE_PREFIX)
        self._allow_listing(role, names.ARCHIVE_PREFIX)

    def grant_athena_results(self, role: iam.IRole) -> None:
        """What Athena does with its caller's permissions in the workgroup's results location
        (``athena-results/``): find the bucket's region, write the result (in parts) and read it back."""
        self._allow_on_objects(
            role, ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"], names.ATHENA_RESULTS_PREFIX
        )
        role.add_to_principal_policy(iam.PolicyStatement(actions=["s3:GetBucketLocation"], resources=[self.bucket.bucket_arn]))
        self._allow_listing(role, names.ATHENA_RESULTS_PREFIX)

    def _allow_listing(self, role: iam.IRole, prefix: str) -> None:
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"], resources=[self.bucket.bucket_arn], conditions={"StringLike": {"s3:prefix": [prefix, f"{prefix}*"]}}
            )
        )

    def grant_champion_read(self, role: iam.IRole, model_names: Sequence[str]) -> None:
        """Let ``role`` read the champion parameters of ``model_names`` (and nothing else in SSM)."""
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["ssm:GetParameter"], resources=[self.champion_parameter_arn(model) for model in model_names]
            )
        )

    def _allow_on_objects(self, role: iam.IRole, actions: list[str], prefix: str) -> None:
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=actions, resources=[self.bucket.arn_for_objects(f"{prefix}*")])
        )
        bucket_resource = self.bucket.node.default_child
        acknowledge(
            role,
            resource_finding("AwsSolutions-IAM5", bucket_resource, "Arn", f"/{prefix}*"),
            f"Scoped to the {prefix} prefix of the registry bucket: the object keys below it are created at run time.",
        )
