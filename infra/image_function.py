"""A Docker-image Lambda (arm64) with its own role, log group and X-Ray tracing.

The three functions share this shape. The role starts empty: it gets write access to the
function's own log group instead of the AWSLambdaBasicExecutionRole managed policy, and each
capability construct adds exactly the grants its function needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra import names
from infra.nag import acknowledge

LOG_RETENTION = logs.RetentionDays.ONE_MONTH

# What Lambda needs to attach a function to subnets; EC2 offers no resource-level scoping for it.
_VPC_NETWORK_INTERFACE_ACTIONS = [
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
]


@dataclass(frozen=True)
class VpcPlacement:
    """Where a VPC function runs: subnets and the security group that grants it database access."""

    vpc: ec2.IVpc
    subnets: ec2.SubnetSelection
    security_group: ec2.ISecurityGroup


class ImageFunction(Construct):
    """A Lambda function built from ``dockerfile`` with the repository root as build context.

    :param dockerfile: path of the Dockerfile relative to the repository root; its asset leaves out
        ``.dockerignore``'s paths and :data:`infra.names.IMAGE_EXCLUDES` of this Dockerfile.
    :param description: shown in the Lambda console.
    :param environment: environment variables (never secrets).
    :param memory_mib: memory size; CPU scales with it.
    :param timeout: function timeout.
    :param placement: subnets and security group for functions that reach the database;
        ``None`` keeps the function outside the VPC.
    :param command: the image's ``CMD`` (handler) override, e.g. a second entry point of the same
        image; the image asset is shared, not built twice. ``None`` keeps the Dockerfile's.
    :param reserved_concurrency: reserved concurrent executions (a cap); ``None`` for none.
    :param ephemeral_storage_mib: size of ``/tmp`` (512 to 10,240 MiB; Lambda bills what is above
        512 per GB-second); ``None`` keeps Lambda's 512 MiB.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        dockerfile: str,
        description: str,
        environment: Mapping[str, str],
        memory_mib: int,
        timeout: cdk.Duration,
        placement: VpcPlacement | None = None,
        command: list[str] | None = None,
        reserved_concurrency: int | None = None,
        ephemeral_storage_mib: int | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Execution role of {description}",
        )
        self.log_group = logs.LogGroup(self, "Logs", retention=LOG_RETENTION, removal_policy=cdk.RemovalPolicy.DESTROY)
        self.log_group.grant_write(self.role)
        if placement is not None:
            self.role.add_to_principal_policy(
                iam.PolicyStatement(actions=_VPC_NETWORK_INTERFACE_ACTIONS, resources=["*"])
            )
        self.function = lambda_.DockerImageFunction(
            self,
            "Function",
            code=lambda_.DockerImageCode.from_image_asset(
                str(names.REPO_ROOT),
                file=dockerfile,
                exclude=list(names.IMAGE_EXCLUDES[dockerfile]),
                platform=ecr_assets.Platform.LINUX_ARM64,
                cmd=command,
            ),
            architecture=lambda_.Architecture.ARM_64,
            description=description,
            environment=dict(environment),
            memory_size=memory_mib,
            timeout=timeout,
            role=self.role,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            tracing=lambda_.Tracing.ACTIVE,
            vpc=placement.vpc if placement else None,
            vpc_subnets=placement.subnets if placement else None,
            security_groups=[placement.security_group] if placement else None,
            reserved_concurrent_executions=reserved_concurrency,
            ephemeral_storage_size=cdk.Size.mebibytes(ephemeral_storage_mib) if ephemeral_storage_mib is not None else None,
        )
        reason = "X-Ray PutTraceSegments/PutTelemetryRecords accept no resource-level scoping"
        if placement is not None:
            reason += "; nor do the EC2 network-interface actions Lambda needs to run the function in subnets"
        acknowledge(self.role, "AwsSolutions-IAM5[Resource::*]", reason + ".")
