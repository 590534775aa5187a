"""The model registry: the bucket of model artifacts and drift reports, and the champion pointer.

Layout: ``models/<model>/<version>/{model.joblib,manifest.json}`` and ``reports/...``. The SSM
parameter ``/<app>/<model>/champion`` names the version predict serves. ``sml promote`` creates and
writes it; the stack only grants reading it. A CloudFormation-owned parameter would need a
placeholder value, which the registry would take for a version (it reads "no parameter" as "no
champion yet"), and a later deploy that touched the resource would reset the production champion.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra import names
from infra.nag import acknowledge, resource_finding

NONCURRENT_VERSION_EXPIRATION = cdk.Duration.days(90)


class ModelRegistry(Construct):
    """Versioned, private, TLS-only bucket plus the champion parameter.

    :param app_name: ``SML_APP_NAME`` of the deployment (prefix of the parameter).
    :param model_name: ``SML_MODEL_NAME``; grants are scoped to this model's prefix.
    """

    def __init__(self, scope: Construct, construct_id: str, *, app_name: str, model_name: str) -> None:
        super().__init__(scope, construct_id)
        self.model_name = model_name
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            encryption=s3.BucketEncryption.S3_MANAGED,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(noncurrent_version_expiration=NONCURRENT_VERSION_EXPIRATION)],
            # Model artifacts outlive the stack; docs/deploy.md says how to empty and delete the bucket.
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        acknowledge(
            self.bucket,
            "AwsSolutions-S1",
            "Only the deployer, the CLI and the functions' roles write here, and every change is kept as an object "
            "version; enable CloudTrail S3 data events where an access log is required.",
        )
        self.champion_parameter_name = names.champion_parameter_name(app_name, model_name)
        self.champion_parameter_arn = cdk.Stack.of(self).format_arn(
            service="ssm",
            resource="parameter",
            resource_name=self.champion_parameter_name.lstrip("/"),
            arn_format=cdk.ArnFormat.SLASH_RESOURCE_NAME,
        )

    @property
    def model_prefix(self) -> str:
        """Key prefix of this model's artifacts, e.g. ``models/breast-cancer/``."""
        return f"{names.MODELS_PREFIX}{self.model_name}/"

    def grant_model_read(self, role: iam.IRole) -> None:
        """Let ``role`` read this model's artifacts, and list key names under this model's prefix only.

        ``s3:ListBucket`` is limited by the ``s3:prefix`` condition key to ``models/<model>/``, so
        the role cannot enumerate other models or the reports. (S3 answers a GET of a missing key
        with 404 only to a caller allowed to list the bucket; a GET carries no ``s3:prefix``, so a
        missing artifact may show as 403 AccessDenied, which the registry names with the key.)
        """
        self._allow_on_objects(role, ["s3:GetObject"], self.model_prefix)
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[self.bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [self.model_prefix, f"{self.model_prefix}*"]}},
            )
        )

    def grant_report_write(self, role: iam.IRole) -> None:
        """Let ``role`` write drift reports under ``reports/`` and read them back.

        Reading is for the alert's presigned link: a presigned URL carries its signer's permissions.
        """
        self._allow_on_objects(role, ["s3:PutObject", "s3:GetObject"], names.REPORTS_PREFIX)

    def grant_champion_read(self, role: iam.IRole) -> None:
        """Let ``role`` read the champion parameter (and nothing else in SSM)."""
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["ssm:GetParameter"], resources=[self.champion_parameter_arn])
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
