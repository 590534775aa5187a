"""Checks to run before ``cdk deploy``, against the account and region of the caller's credentials.

``python -m infra.preflight -c key=value ...`` reads the same context as the CDK app (``cdk.json``
and ``-c``), prints one line per check and exits 1 when a check fails, so a deployment that the
account cannot take stops before CloudFormation has created anything. Each check takes its boto3
client as an argument; the responses it reads are the documented ones of the API it calls.

- **Availability Zones.** RDS Proxy is not offered in every Availability Zone: AWS's "Quotas and
  limitations for RDS Proxy" names the zone IDs ``use1-az3`` (US East, N. Virginia) and ``usw1-az2``
  (US West, N. California). Which zone *name* (``us-east-1a``...) maps to an ID differs per
  account, so the check maps the zones the template will use to their IDs with
  ``ec2:DescribeAvailabilityZones``. Without context ``availability_zones`` the template spans the
  first two zones ``Fn::GetAZs`` returns: per the CloudFormation reference, those that have a
  default subnet, or every zone of the region when none has one.
- **Reserved concurrency.** With ``function_url_auth=NONE`` predict reserves
  ``predict_reserved_concurrency``. Lambda lets an account reserve at most its unreserved
  concurrency minus 100 (AWS Lambda Developer Guide, "Configuring reserved concurrency": it keeps
  100 for the functions without a reservation), and a new account's quota may be as low as 10, so
  the deploy would fail on predict. The check reads ``lambda:GetAccountSettings`` and counts what
  this stack's predict already reserves (``lambda:GetFunctionConcurrency`` on the
  ``PredictFunctionArn`` output) as available to it. No other function reserves any, so a default
  deployment needs none (the archive function would gain from 1, see ``infra/archive.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from infra import names
from infra.config import ContextError, DeploymentConfig, config_from_context

# Zone IDs where RDS Proxy is not offered (AWS RDS User Guide, "Quotas and limitations for RDS Proxy").
RDS_PROXY_UNSUPPORTED_ZONE_IDS = frozenset({"use1-az3", "usw1-az2"})
VPC_ZONE_COUNT = 2  # what infra/network.py spans without context availability_zones


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict: ``ok`` false stops the deployment; ``message`` says what was found and what to do."""

    name: str
    ok: bool
    message: str


def template_zones(ec2_client: Any, config: DeploymentConfig) -> list[dict[str, Any]]:
    """The Availability Zones the synthesized template will use, as DescribeAvailabilityZones entries.

    :param ec2_client: a boto3 EC2 client of the target region.
    :returns: the configured zones in their order, or the first :data:`VPC_ZONE_COUNT` that
        ``Fn::GetAZs`` returns (alphabetical; those with a default subnet when any has one).
    :raises botocore.exceptions.ClientError: e.g. ``InvalidParameterValue`` for a zone name the
        region does not have.
    """
    if config.availability_zones:
        found = ec2_client.describe_availability_zones(ZoneNames=list(config.availability_zones))["AvailabilityZones"]
        by_name = {zone["ZoneName"]: zone for zone in found}
        return [by_name[name] for name in config.availability_zones if name in by_name]
    zones = ec2_client.describe_availability_zones(
        Filters=[{"Name": "zone-type", "Values": ["availability-zone"]}, {"Name": "state", "Values": ["available"]}]
    )["AvailabilityZones"]
    defaults = ec2_client.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    with_default_subnet = {subnet["AvailabilityZone"] for subnet in defaults}
    candidates = [zone for zone in zones if zone["ZoneName"] in with_default_subnet] or zones
    return sorted(candidates, key=lambda zone: zone["ZoneName"])[:VPC_ZONE_COUNT]


def check_availability_zones(ec2_client: Any, config: DeploymentConfig) -> CheckResult:
    """Fail when a zone the template will use has no RDS Proxy, naming zones of the region that do."""
    name = "availability zones"
    zones = template_zones(ec2_client, config)
    missing = sorted(set(config.availability_zones) - {zone["ZoneName"] for zone in zones})
    if missing:
        return CheckResult(name, False, f"context {names.CTX_AVAILABILITY_ZONES}: {', '.join(missing)} not found in this region")
    described = ", ".join(f"{zone['ZoneName']} ({zone['ZoneId']})" for zone in zones)
    unsupported = [zone for zone in zones if zone["ZoneId"] in RDS_PROXY_UNSUPPORTED_ZONE_IDS]
    if not unsupported:
        return CheckResult(name, True, f"{described}: RDS Proxy is offered in each")
    every = ec2_client.describe_availability_zones(
        Filters=[{"Name": "zone-type", "Values": ["availability-zone"]}, {"Name": "state", "Values": ["available"]}]
    )["AvailabilityZones"]
    usable = sorted(zone["ZoneName"] for zone in every if zone["ZoneId"] not in RDS_PROXY_UNSUPPORTED_ZONE_IDS)
    bad = ", ".join(f"{zone['ZoneName']} ({zone['ZoneId']})" for zone in unsupported)
    return CheckResult(
        name,
        False,
        f"RDS Proxy is not offered in {bad}; deploy with -c {names.CTX_AVAILABILITY_ZONES}="
        f"{','.join(usable[:VPC_ZONE_COUNT])} (zones here with RDS Proxy: {', '.join(usable)})",
    )


# Lambda keeps this much of the account's concurrency unreserved ("Configuring reserved concurrency").
LAMBDA_MIN_UNRESERVED = 100
# Service Quotas code of Lambda's "Concurrent executions".
LAMBDA_CONCURRENCY_QUOTA_CODE = "L-B99A9384"
PREDICT_FUNCTION_OUTPUT = "PredictFunctionArn"


def reserved_by_stack(cloudformation_client: Any, lambda_client: Any, stack_name: str) -> int:
    """Concurrency the deployed stack's predict function(s) reserve now; 0 when the stack does not exist.

    :raises botocore.exceptions.ClientError: any error but CloudFormation's ``ValidationError``
        for a stack that does not exist.
    """
    from botocore.exceptions import ClientError

    try:
        stacks = cloudformation_client.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ValidationError" and "does not exist" in exc.response["Error"].get("Message", ""):
            return 0
        raise
    arns = [
        output["OutputValue"]
        for stack in stacks
        for output in stack.get("Outputs", [])
        if output["OutputKey"].startswith(PREDICT_FUNCTION_OUTPUT)
    ]
    return sum(lambda_client.get_function_concurrency(FunctionName=arn).get("ReservedConcurrentExecutions", 0) for arn in arns)


def check_reserved_concurrency(lambda_client: Any, cloudformation_client: Any, config: DeploymentConfig) -> CheckResult:
    """Fail when the account cannot reserve what predict reserves with ``function_url_auth=NONE``."""
    name = "reserved concurrency"
    limit = lambda_client.get_account_settings()["AccountLimit"]
    total, unreserved = limit["ConcurrentExecutions"], limit["UnreservedConcurrentExecutions"]
    account = f"the account's concurrency is {total}, {unreserved} of it unreserved"
    if config.function_url_auth != "NONE":
        return CheckResult(name, True, f"nothing reserved (function_url_auth={config.function_url_auth}); {account}")
    # Each model's predict function reserves as much.
    needed = config.predict_reserved_concurrency * len(config.model_names)
    held = reserved_by_stack(cloudformation_client, lambda_client, config.stack_name)
    allowed = unreserved + held - LAMBDA_MIN_UNRESERVED
    if needed <= allowed:
        return CheckResult(name, True, f"predict reserves {needed} of the {allowed} this account may reserve; {account}")
    per_model = f", {config.predict_reserved_concurrency} per model" if len(config.model_names) > 1 else ""
    return CheckResult(
        name,
        False,
        f"predict reserves {needed}{per_model} (context {names.CTX_PREDICT_RESERVED_CONCURRENCY}) but this account may reserve "
        f"{max(allowed, 0)}: {account}, and Lambda keeps {LAMBDA_MIN_UNRESERVED} unreserved. Request more "
        f"'Concurrent executions' in Service Quotas (aws service-quotas request-service-quota-increase "
        f"--service-code lambda --quota-code {LAMBDA_CONCURRENCY_QUOTA_CODE} --desired-value 1000), or lower "
        f"{names.CTX_PREDICT_RESERVED_CONCURRENCY}",
    )


ClientFactory = Callable[[str], Any]

# Name -> the check, given a factory of boto3 clients by service name.
CHECKS: dict[str, Callable[[ClientFactory, DeploymentConfig], CheckResult]] = {
    "availability zones": lambda client, config: check_availability_zones(client("ec2"), config),
    "reserved concurrency": lambda client, config: check_reserved_concurrency(
        client("lambda"), client("cloudformation"), config
    ),
}


def run_checks(config: DeploymentConfig, client: ClientFactory) -> list[CheckResult]:
    """Run every check with clients made by ``client(service)``; a check whose call fails fails with the reason."""
    from botocore.exceptions import BotoCoreError, ClientError

    results = []
    for name, check in CHECKS.items():
        try:
            results.append(check(client, config))
        except (BotoCoreError, ClientError) as exc:
            results.append(CheckResult(name, False, f"could not check: {exc}"))
    return results


def context_from_arguments(pairs: Sequence[str], cdk_json: Mapping[str, Any]) -> dict[str, Any]:
    """``cdk.json``'s ``context`` overlaid with ``-c key=value`` pairs, as the CDK CLI does.

    :raises ContextError: for a pair without ``=``.
    """
    context = dict(cdk_json.get("context", {}))
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise ContextError(pair, "give context as -c key=value")
        context[key] = value
    return context


def main(argv: Sequence[str] | None = None) -> int:
    """Check the account and region of the default credentials; exit 0 when every check passes."""
    parser = argparse.ArgumentParser(prog="python -m infra.preflight", description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--context", action="append", default=[], metavar="KEY=VALUE", help="as for cdk deploy")
    arguments = parser.parse_args(argv)
    cdk_json_path = names.REPO_ROOT / "cdk.json"
    cdk_json = json.loads(cdk_json_path.read_text(encoding="utf-8")) if cdk_json_path.exists() else {}
    try:
        config = config_from_context(context_from_arguments(arguments.context, cdk_json).get)
    except ContextError as exc:
        print(f"infra.preflight: {exc}", file=sys.stderr)
        return 2
    import boto3

    # The CDK CLI and the guide take the region from AWS_REGION too; botocore reads only AWS_DEFAULT_REGION.
    session = boto3.Session(region_name=os.environ.get("AWS_REGION") or None)
    if session.region_name is None:
        print("infra.preflight: no region: set AWS_REGION or a region in your profile", file=sys.stderr)
        return 2
    results = run_checks(config, session.client)
    for result in results:
        print(f"{'ok  ' if result.ok else 'FAIL'} {result.name}: {result.message}")
    return 0 if all(result.ok for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
