"""cdk-nag (AwsSolutions) wiring and the one way to acknowledge a finding.

cdk-nag 3 runs as a CDK policy-validation plugin: synthesis fails on any finding that is not
acknowledged. Every acknowledgement sits next to the resource it concerns and carries its reason.
"""

from __future__ import annotations

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct

PLUGIN_NAME = "AwsSolutions"


def add_nag_checks(app: cdk.App) -> None:
    """Make synthesis of ``app`` fail on unacknowledged AwsSolutions findings."""
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))


def acknowledge(scope: IConstruct, finding: str, reason: str) -> None:
    """Acknowledge one cdk-nag finding on ``scope`` and its children.

    :param scope: the construct the finding is reported on (or one of its parents).
    :param finding: the rule id, with the finding in brackets where the rule reports several,
        e.g. ``AwsSolutions-IAM5[Resource::*]``.
    :param reason: why the finding is acceptable here; shown in the validation report.
    """
    # CDK files a plugin's findings as "<plugin>::<rule>"; without the prefix the acknowledgement
    # would be recorded as one of an annotation.
    cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=f"{PLUGIN_NAME}::{finding}", reason=reason))


def resource_finding(rule: str, resource: cdk.CfnResource, attribute: str, suffix: str) -> str:
    """The id cdk-nag gives a wildcard resource ``<LogicalId.Attribute><suffix>`` in a policy.

    :param rule: e.g. ``AwsSolutions-IAM5``.
    :param resource: the resource whose attribute the policy references.
    :param attribute: e.g. ``Arn``.
    :param suffix: what follows the attribute, e.g. ``/models/breast-cancer/*``.
    """
    logical_id = cdk.Stack.of(resource).resolve(resource.logical_id)
    return f"{rule}[Resource::<{logical_id}.{attribute}>{suffix}]"
