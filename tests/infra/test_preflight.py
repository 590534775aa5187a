"""The pre-deploy checks against AWS's documented responses (botocore Stubber: the request parameters
and response shapes are validated against the service models)."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from botocore.stub import Stubber

from infra.config import config_from_context
from infra.preflight import check_availability_zones, check_reserved_concurrency, context_from_arguments, run_checks

# ec2:DescribeAvailabilityZones as documented; in this account us-east-1c is the zone use1-az3.
ZONES = [
    ("us-east-1a", "use1-az1"),
    ("us-east-1b", "use1-az2"),
    ("us-east-1c", "use1-az3"),
    ("us-east-1d", "use1-az4"),
]
AVAILABLE = [{"Name": "zone-type", "Values": ["availability-zone"]}, {"Name": "state", "Values": ["available"]}]


def zone(name: str, zone_id: str) -> dict:
    return {
        "State": "available",
        "OptInStatus": "opt-in-not-required",
        "Messages": [],
        "RegionName": "us-east-1",
        "ZoneName": name,
        "ZoneId": zone_id,
        "GroupName": "us-east-1-zg-1",
        "NetworkBorderGroup": "us-east-1",
        "ZoneType": "availability-zone",
    }


def default_subnet(zone_name: str) -> dict:
    return {"AvailabilityZone": zone_name, "DefaultForAz": True, "SubnetId": f"subnet-{zone_name[-1] * 8}", "VpcId": "vpc-1"}


@pytest.fixture
def ec2() -> Iterator[tuple[object, Stubber]]:
    client = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def test_chosen_zones_where_the_proxy_is_offered_pass(ec2) -> None:
    client, stubber = ec2
    stubber.add_response(
        "describe_availability_zones",
        {"AvailabilityZones": [zone(*ZONES[0]), zone(*ZONES[3])]},
        {"ZoneNames": ["us-east-1a", "us-east-1d"]},
    )
    result = check_availability_zones(client, config_from_context({"availability_zones": "us-east-1a,us-east-1d"}.get))
    assert result.ok, result.message
    assert "us-east-1a (use1-az1), us-east-1d (use1-az4)" in result.message


def test_a_chosen_zone_without_rds_proxy_fails_and_names_zones_that_have_it(ec2) -> None:
    client, stubber = ec2
    stubber.add_response(
        "describe_availability_zones",
        {"AvailabilityZones": [zone(*ZONES[1]), zone(*ZONES[2])]},
        {"ZoneNames": ["us-east-1b", "us-east-1c"]},
    )
    stubber.add_response("describe_availability_zones", {"AvailabilityZones": [zone(*z) for z in ZONES]}, {"Filters": AVAILABLE})
    result = check_availability_zones(client, config_from_context({"availability_zones": ["us-east-1b", "us-east-1c"]}.get))
    assert not result.ok
    assert "not offered in us-east-1c (use1-az3)" in result.message
    assert "-c availability_zones=us-east-1a,us-east-1b" in result.message


def test_without_context_the_first_two_zones_with_a_default_subnet_are_checked(ec2) -> None:
    client, stubber = ec2
    stubber.add_response("describe_availability_zones", {"AvailabilityZones": [zone(*z) for z in ZONES]}, {"Filters": AVAILABLE})
    # Fn::GetAZs returns the zones with a default subnet: here b and c, so the template takes c too.
    stubber.add_response(
        "describe_subnets",
        {"Subnets": [default_subnet("us-east-1c"), default_subnet("us-east-1b")]},
        {"Filters": [{"Name": "default-for-az", "Values": ["true"]}]},
    )
    stubber.add_response("describe_availability_zones", {"AvailabilityZones": [zone(*z) for z in ZONES]}, {"Filters": AVAILABLE})
    result = check_availability_zones(client, config_from_context({}.get))
    assert not result.ok
    assert "us-east-1c (use1-az3)" in result.message


def test_without_default_subnets_every_zone_counts_in_alphabetical_order(ec2) -> None:
    client, stubber = ec2
    stubber.add_response(
        "describe_availability_zones", {"AvailabilityZones": [zone(*z) for z in reversed(ZONES)]}, {"Filters": AVAILABLE}
    )
    stubber.add_response("describe_subnets", {"Subnets": []}, {"Filters": [{"Name": "default-for-az", "Values": ["true"]}]})
    result = check_availability_zones(client, config_from_context({}.get))
    assert result.ok and result.message.startswith("us-east-1a (use1-az1), us-east-1b (use1-az2)")


def test_a_failing_call_fails_its_check_with_the_api_error(ec2) -> None:
    client, stubber = ec2
    stubber.add_client_error(
        "describe_availability_zones",
        service_error_code="InvalidParameterValue",
        service_message="Invalid availability zone: [us-east-1q]",
        expected_params={"ZoneNames": ["us-east-1a", "us-east-1q"]},
    )
    lambda_client = boto3.client("lambda", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    config = config_from_context({"availability_zones": "us-east-1a,us-east-1q"}.get)
    with Stubber(lambda_client) as lambda_stub:
        lambda_stub.add_client_error("get_account_settings", service_error_code="AccessDeniedException", http_status_code=403)
        results = run_checks(config, {"ec2": client, "lambda": lambda_client, "cloudformation": None}.__getitem__)
    assert [(r.name, r.ok) for r in results] == [("availability zones", False), ("reserved concurrency", False)]
    assert "us-east-1q" in results[0].message and "AccessDeniedException" in results[1].message


def test_context_comes_from_cdk_json_and_the_command_line_wins() -> None:
    context = context_from_arguments(["environment=prod", "availability_zones=us-east-1a,us-east-1b"], {"context": {"environment": "dev", "app_name": "x"}})
    assert context == {"environment": "prod", "app_name": "x", "availability_zones": "us-east-1a,us-east-1b"}


# --- reserved concurrency ---------------------------------------------------------------------------------

PUBLIC = {"function_url_auth": "NONE"}
PREDICT_ARN = "arn:aws:lambda:us-east-1:123456789012:function:sml-dev-PredictImageFunction-abc"


def account_settings(total: int, unreserved: int) -> dict:
    """lambda:GetAccountSettings as documented."""
    return {
        "AccountLimit": {
            "TotalCodeSize": 80530636800,
            "CodeSizeUnzipped": 262144000,
            "CodeSizeZipped": 52428800,
            "ConcurrentExecutions": total,
            "UnreservedConcurrentExecutions": unreserved,
        },
        "AccountUsage": {"TotalCodeSize": 0, "FunctionCount": 0},
    }


@pytest.fixture
def lambda_and_cloudformation() -> Iterator[tuple[object, Stubber, object, Stubber]]:
    keys = {"region_name": "us-east-1", "aws_access_key_id": "x", "aws_secret_access_key": "x"}
    lambda_client, cloudformation = boto3.client("lambda", **keys), boto3.client("cloudformation", **keys)
    with Stubber(lambda_client) as lambda_stub, Stubber(cloudformation) as cloudformation_stub:
        yield lambda_client, lambda_stub, cloudformation, cloudformation_stub
        lambda_stub.assert_no_pending_responses()
        cloudformation_stub.assert_no_pending_responses()


def no_stack(cloudformation_stub: Stubber) -> None:
    cloudformation_stub.add_client_error(
        "describe_stacks",
        service_error_code="ValidationError",
        service_message="Stack with id sml-dev does not exist",
        http_status_code=400,
        expected_params={"StackName": "sml-dev"},
    )


def test_a_new_account_with_a_quota_of_10_cannot_reserve_for_a_public_predict(lambda_and_cloudformation) -> None:
    lambda_client, lambda_stub, cloudformation, cloudformation_stub = lambda_and_cloudformation
    lambda_stub.add_response("get_account_settings", account_settings(10, 10), {})
    no_stack(cloudformation_stub)
    result = check_reserved_concurrency(lambda_client, cloudformation, config_from_context(PUBLIC.get))
    assert not result.ok
    assert "predict reserves 20" in result.message and "may reserve 0" in result.message
    assert "--quota-code L-B99A9384" in result.message


def test_the_reservation_must_leave_100_unreserved(lambda_and_cloudformation) -> None:
    lambda_client, lambda_stub, cloudformation, cloudformation_stub = lambda_and_cloudformation
    for unreserved, ok in ((119, False), (120, True)):
        lambda_stub.add_response("get_account_settings", account_settings(1000, unreserved), {})
        no_stack(cloudformation_stub)
        result = check_reserved_concurrency(lambda_client, cloudformation, config_from_context(PUBLIC.get))
        assert result.ok is ok, (unreserved, result.message)


def test_what_the_deployed_predict_already_reserves_counts_as_available(lambda_and_cloudformation) -> None:
    lambda_client, lambda_stub, cloudformation, cloudformation_stub = lambda_and_cloudformation
    # 110 unreserved because the stack's predict holds 20 already: redeploying it needs nothing new.
    lambda_stub.add_response("get_account_settings", account_settings(130, 110), {})
    cloudformation_stub.add_response(
        "describe_stacks",
        {
            "Stacks": [
                {
                    "StackName": "sml-dev",
                    "CreationTime": "2026-12-01T00:00:00Z",
                    "StackStatus": "UPDATE_COMPLETE",
                    "Outputs": [
                        {"OutputKey": "PredictFunctionArn", "OutputValue": PREDICT_ARN},
                        {"OutputKey": "QueueUrl", "OutputValue": "https://sqs.us-east-1.amazonaws.com/1/q"},
                    ],
                }
            ]
        },
        {"StackName": "sml-dev"},
    )
    lambda_stub.add_response("get_function_concurrency", {"ReservedConcurrentExecutions": 20}, {"FunctionName": PREDICT_ARN})
    result = check_reserved_concurrency(lambda_client, cloudformation, config_from_context(PUBLIC.get))
    assert result.ok, result.message


def test_an_iam_authenticated_predict_reserves_nothing(lambda_and_cloudformation) -> None:
    lambda_client, lambda_stub, cloudformation, _ = lambda_and_cloudformation
    lambda_stub.add_response("get_account_settings", account_settings(10, 10), {})
    result = check_reserved_concurrency(lambda_client, cloudformation, config_from_context({}.get))
    assert result.ok and "nothing reserved" in result.message


def test_each_model_s_predict_reserves_its_own_share(lambda_and_cloudformation) -> None:
    lambda_client, lambda_stub, cloudformation, cloudformation_stub = lambda_and_cloudformation
    lambda_stub.add_response("get_account_settings", account_settings(1000, 130), {})
    no_stack(cloudformation_stub)
    config = config_from_context({**PUBLIC, "models": "breast-cancer,wine"}.get)
    result = check_reserved_concurrency(lambda_client, cloudformation, config)
    assert not result.ok and "predict reserves 40, 20 per model" in result.message
