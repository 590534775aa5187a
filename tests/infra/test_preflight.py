"""The pre-deploy checks against AWS's documented responses (botocore Stubber: the request parameters
and response shapes are validated against the service models)."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from botocore.stub import Stubber

from infra.config import config_from_context
from infra.preflight import check_availability_zones, context_from_arguments, run_checks

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


def test_a_zone_name_the_region_does_not_have_fails_the_check_with_the_api_error(ec2) -> None:
    client, stubber = ec2
    stubber.add_client_error(
        "describe_availability_zones",
        service_error_code="InvalidParameterValue",
        service_message="Invalid availability zone: [us-east-1q]",
        expected_params={"ZoneNames": ["us-east-1a", "us-east-1q"]},
    )
    config = config_from_context({"availability_zones": "us-east-1a,us-east-1q"}.get)
    (result,) = [r for r in run_checks(config, lambda service: client) if r.name == "availability zones"]
    assert not result.ok and "us-east-1q" in result.message


def test_context_comes_from_cdk_json_and_the_command_line_wins() -> None:
    context = context_from_arguments(["environment=prod", "availability_zones=us-east-1a,us-east-1b"], {"context": {"environment": "dev", "app_name": "x"}})
    assert context == {"environment": "prod", "app_name": "x", "availability_zones": "us-east-1a,us-east-1b"}
