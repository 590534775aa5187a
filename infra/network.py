"""The VPC: isolated subnets only, reached from inside through VPC endpoints.

Nothing in the VPC talks to the internet. The writer and drift functions run in the
``functions`` subnets and reach Secrets Manager, SNS and SSM through interface endpoints and S3
through a gateway endpoint; the database and its proxy live in the ``database`` subnets. Predict
stays outside the VPC.
"""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.image_function import LOG_RETENTION, VpcPlacement

FUNCTIONS_SUBNETS = "functions"
DATABASE_SUBNETS = "database"

# AWS APIs the VPC functions call (the writer reads its secret; drift also publishes and reads the champion).
_INTERFACE_ENDPOINTS = {
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "Sns": ec2.InterfaceVpcEndpointAwsService.SNS,
    "Ssm": ec2.InterfaceVpcEndpointAwsService.SSM,
}


class Network(Construct):
    """VPC over two AZs with isolated subnets, endpoints and a flow log of rejected traffic.

    :param endpoints_in_every_az: place interface endpoints in both AZs (each costs per hour and
        AZ); otherwise in the first AZ only, which the other AZ reaches across the VPC.
    :param athena_endpoint: add an Athena interface endpoint (a drift function reading through Athena).
    :param availability_zones: AZ names to span (context ``availability_zones``); empty takes the
        first two of ``Fn::GetAZs``, which in us-east-1 or us-west-1 may be a zone where RDS Proxy
        is not offered (``python -m infra.preflight`` checks).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        endpoints_in_every_az: bool,
        availability_zones: Sequence[str] = (),
        athena_endpoint: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=None if availability_zones else 2,
            availability_zones=list(availability_zones) or None,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name=FUNCTIONS_SUBNETS, subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24
                ),
                ec2.SubnetConfiguration(
                    name=DATABASE_SUBNETS, subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24
                ),
            ],
        )
        self.function_subnets = ec2.SubnetSelection(subnet_group_name=FUNCTIONS_SUBNETS)
        self.database_subnets = ec2.SubnetSelection(subnet_group_name=DATABASE_SUBNETS)

        flow_logs = logs.LogGroup(self, "FlowLogs", retention=LOG_RETENTION, removal_policy=cdk.RemovalPolicy.DESTROY)
        self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
            traffic_type=ec2.FlowLogTrafficType.REJECT,
        )

        self.function_security_group = ec2.SecurityGroup(
            self,
            "FunctionSecurityGroup",
            vpc=self.vpc,
            description="Writer and drift functions",
            # The subnets have no route out of the VPC, so outbound traffic can only reach the
            # endpoints and the proxy; S3's gateway endpoint has no security group to name.
            allow_all_outbound=True,
        )
        endpoint_subnets = self.vpc.select_subnets(subnet_group_name=FUNCTIONS_SUBNETS).subnets
        if not endpoints_in_every_az:
            endpoint_subnets = endpoint_subnets[:1]
        # Athena for a drift function that reads its window through Athena (context drift_window_source).
        interface_endpoints = {**_INTERFACE_ENDPOINTS, **({"Athena": ec2.InterfaceVpcEndpointAwsService.ATHENA} if athena_endpoint else {})}
        for name, service in interface_endpoints.items():
            endpoint = self.vpc.add_interface_endpoint(
                name,
                service=service,
                subnets=ec2.SubnetSelection(subnets=endpoint_subnets),
                open=False,
            )
            endpoint.connections.allow_default_port_from(
                self.function_security_group, f"HTTPS to {name} from the functions"
            )
        self.vpc.add_gateway_endpoint(
            "S3", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=[self.function_subnets]
        )

    @property
    def function_placement(self) -> VpcPlacement:
        """Subnets and security group for the writer and drift functions."""
        return VpcPlacement(self.vpc, self.function_subnets, self.function_security_group)
