"""RDS for MySQL in isolated subnets, its generated secret, and the RDS Proxy the functions use.

The writer and drift functions log in to the proxy (TLS and IAM authentication required) as their
own database users with IAM tokens; the proxy logs in to MySQL with the users' secrets. Only the
migration step logs in as the master user, and only the proxy may connect to the instance.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from constructs import Construct

from infra import names
from infra.config import PRODUCTION, DeploymentConfig
from infra.image_function import LOG_RETENTION
from infra.nag import acknowledge
from infra.network import Network

# The 8.4 LTS major version only: RDS starts from its default minor and upgrades minors in the
# maintenance window (auto_minor_version_upgrade). A minor pinned in the template would fall behind
# the instance after the first such upgrade, and the next deploy that names a minor below the
# running one fails ("cannot downgrade"); a major-only version never disagrees with the instance.
ENGINE_MAJOR_VERSION = "8.4"
ENGINE_VERSION = rds.MysqlEngineVersion.of(ENGINE_MAJOR_VERSION, ENGINE_MAJOR_VERSION)
MYSQL_PORT = 3306
LOG_EXPORTS = ("error", "slowquery")

# Server-wide what every session needs (sml.core.db.ensure_session_settings then sends no SET, which
# would pin each client connection of the proxy), plus the slow query log that LOG_EXPORTS ships:
# RDS writes it only with slow_query_log=1 and log_output=FILE.
SERVER_PARAMETERS = {
    "sql_mode": "STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION",
    "time_zone": "UTC",
    "slow_query_log": "1",
    "long_query_time": "1",
    "log_output": "FILE",
}
# A client waits this long for a pooled connection before the proxy answers with an error; below
# the writer's 30 s timeout, so a saturated pool fails the batch (SQS retries it) instead of
# timing the function out.
PROXY_BORROW_TIMEOUT = cdk.Duration.seconds(10)
# The proxy may open at most this share of max_connections, so an operator (or the migration
# step, were the pool full) can still log in to the instance.
PROXY_MAX_CONNECTIONS_PERCENT = 90
PROXY_MAX_IDLE_CONNECTIONS_PERCENT = 50
# gp3 storage the instance starts with, and how far RDS storage autoscaling may grow it (GiB).
ALLOCATED_STORAGE_GIB = 20
MAX_ALLOCATED_STORAGE_GIB = 100


class Database(Construct):
    """The MySQL instance, its secret and the proxy in front of it."""

    def __init__(self, scope: Construct, construct_id: str, *, network: Network, config: DeploymentConfig) -> None:
        super().__init__(scope, construct_id)
        # The standard RDS secret; dbname included so a client needs nothing but the secret.
        generated_secret = rds.DatabaseSecret(self, "Secret", username=names.DB_ADMIN_USER, dbname=names.DB_NAME)
        # Unique per stack creation: a first deploy that failed and was deleted (or a stack deleted with
        # the instance retained) leaves no name behind that the retry would collide with.
        suffix = stack_creation_suffix(self)
        identifier = f"{config.deployed_app_name}-mysql-{suffix}"
        proxy_name = f"{config.deployed_app_name}-proxy-{suffix}"
        # Created before the instance and the proxy, so they log into groups that have a retention
        # and that the stack deletes; RDS would otherwise create the groups itself, kept forever.
        export_log_groups = [
            _log_group(self, f"{export.title()}Logs", f"/aws/rds/instance/{identifier}/{export}")
            for export in LOG_EXPORTS
        ]
        proxy_log_group = _log_group(self, "ProxyLogs", f"/aws/rds/proxy/{proxy_name}")
        engine = rds.DatabaseInstanceEngine.mysql(version=ENGINE_VERSION)
        self.parameter_group = rds.ParameterGroup(
            self,
            "Parameters",
            engine=engine,
            description=f"{config.deployed_app_name}: strict UTC sessions and the slow query log",
            parameters=dict(SERVER_PARAMETERS),
        )
        self.instance = rds.DatabaseInstance(
            self,
            "Instance",
            instance_identifier=identifier,
            engine=engine,
            parameter_group=self.parameter_group,
            instance_type=ec2.InstanceType(f"t4g.{config.db_instance_size}"),
            vpc=network.vpc,
            vpc_subnets=network.database_subnets,
            credentials=rds.Credentials.from_secret(generated_secret),
            database_name=names.DB_NAME,
            storage_type=rds.StorageType.GP3,
            allocated_storage=ALLOCATED_STORAGE_GIB,
            max_allocated_storage=MAX_ALLOCATED_STORAGE_GIB,
            storage_encrypted=True,
            backup_retention=cdk.Duration.days(config.db_backup_retention_days),
            multi_az=config.db_multi_az,
            deletion_protection=config.deletion_protection,
            removal_policy=cdk.RemovalPolicy.SNAPSHOT,
            cloudwatch_logs_exports=list(LOG_EXPORTS),
            auto_minor_version_upgrade=True,
            publicly_accessible=False,
        )
        self.instance.node.add_dependency(*export_log_groups)
        # cfn-lint's list of engine versions holds full versions only; RDS documents a major version
        # alone as "the default minor version of that major version" (CreateDBInstance EngineVersion).
        cfn_instance = self.instance.node.default_child
        cfn_instance.add_metadata("cfn-lint", {"config": {"ignore_checks": ["E3691"]}})
        cdk.Validations.of(self.instance).acknowledge(
            cdk.Acknowledgment(
                id="CloudFormation-Validate::E9006",
                reason="EngineVersion 8.4 (major only) is valid: RDS takes the major's default minor version; the "
                "schema's list names full versions only.",
            )
        )
        # The attached secret: the same secret, once host and port are in it.
        self.secret = self.instance.secret
        # The writer's and drift's own users. The proxy logs in to MySQL with these passwords; the
        # functions log in to the proxy with IAM tokens and never read a secret. The migration step
        # creates the users (and re-sets their passwords) from these secrets.
        self.user_secrets = {
            function: rds.DatabaseSecret(self, f"{function.title()}UserSecret", username=username, dbname=names.DB_NAME)
            for function, username in names.DB_FUNCTION_USERS.items()
        }
        self.proxy_security_group = ec2.SecurityGroup(
            self,
            "ProxySecurityGroup",
            vpc=network.vpc,
            description="RDS Proxy in front of the MySQL instance",
            # Isolated subnets: outbound traffic cannot leave the VPC whatever this allows.
            allow_all_outbound=True,
        )
        self.proxy = rds.DatabaseProxy(
            self,
            "Proxy",
            proxy_target=rds.ProxyTarget.from_instance(self.instance),
            db_proxy_name=proxy_name,
            secrets=[self.secret, *self.user_secrets.values()],
            iam_auth=True,
            vpc=network.vpc,
            vpc_subnets=network.database_subnets,
            security_groups=[self.proxy_security_group],
            require_tls=True,
            client_password_auth_type=rds.ClientPasswordAuthType.MYSQL_CACHING_SHA2_PASSWORD,
            borrow_timeout=PROXY_BORROW_TIMEOUT,
            max_connections_percent=PROXY_MAX_CONNECTIONS_PERCENT,
            max_idle_connections_percent=PROXY_MAX_IDLE_CONNECTIONS_PERCENT,
        )
        self.proxy.node.add_dependency(proxy_log_group)
        self.instance.connections.allow_default_port_from(self.proxy_security_group, "MySQL from the RDS proxy")
        self.proxy.connections.allow_from(
            network.function_security_group, ec2.Port.tcp(MYSQL_PORT), "MySQL from the writer and drift functions"
        )
        self._acknowledge_findings(config, generated_secret)

    @property
    def endpoint(self) -> str:
        """Host name the functions connect to (the proxy, never the instance)."""
        return self.proxy.endpoint

    def grant_connect(self, grantee: iam.IGrantable, db_user: str) -> None:
        """Let ``grantee`` log in to the proxy as ``db_user`` with an IAM token (``rds-db:connect``)."""
        self.proxy.grant_connect(grantee, db_user)

    def grant_user_secrets_read(self, grantee: iam.IGrantable) -> None:
        """Let ``grantee`` (the migration step) read the functions' user secrets, to create the users."""
        for secret in self.user_secrets.values():
            secret.grant_read(grantee)

    def _acknowledge_findings(self, config: DeploymentConfig, secret: rds.DatabaseSecret) -> None:
        acknowledge(
            secret,
            "AwsSolutions-SMG4",
            "Only RDS Proxy reads the master secret (the functions log in with IAM tokens), so it can be rotated "
            "with aws secretsmanager rotate-secret; docs/deploy.md says how. No rotation schedule in the stack yet.",
        )
        for user_secret in self.user_secrets.values():
            acknowledge(
                user_secret,
                "AwsSolutions-SMG4",
                "Rotated by putting a new password in the secret and invoking the migration step, which sets each "
                "function user's password from its secret on every run; functions use IAM tokens, not the secret.",
            )
        acknowledge(
            self.instance,
            "AwsSolutions-RDS11",
            "The instance is reachable only from the proxy's security group inside isolated subnets; a non-default "
            "port would add no protection there.",
        )
        if not config.db_multi_az:
            acknowledge(
                self.instance,
                "AwsSolutions-RDS3",
                f"Single-AZ keeps the default deployment cheap; the events queue buffers writes through an outage. "
                f"Set context {names.CTX_DB_MULTI_AZ}=true for a standby.",
            )
        if not config.deletion_protection:
            acknowledge(
                self.instance,
                "AwsSolutions-RDS10",
                f"Off outside {PRODUCTION} by default (context {names.CTX_DELETION_PROTECTION}): with it on, a failed "
                "first deploy cannot roll the instance back. Removal still takes a final snapshot.",
            )


def stack_creation_suffix(scope: Construct) -> str:
    """The first 8 hex digits of the stack id's UUID (a CloudFormation token).

    ``AWS::StackId`` is ``arn:...:stack/<name>/<uuid>`` and gets a new UUID each time a stack of that
    name is created, so names built with it stay the same across updates and differ after a re-create.
    """
    stack_uuid = cdk.Fn.select(2, cdk.Fn.split("/", cdk.Stack.of(scope).stack_id))
    return cdk.Fn.select(0, cdk.Fn.split("-", stack_uuid))


def _log_group(scope: Construct, construct_id: str, name: str) -> logs.LogGroup:
    return logs.LogGroup(
        scope, construct_id, log_group_name=name, retention=LOG_RETENTION, removal_policy=cdk.RemovalPolicy.DESTROY
    )
