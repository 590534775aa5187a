"""The alerts topic (drift reports and alarms) and the alarms that publish to it."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from infra.nag import acknowledge


class Alerts(Construct):
    """A KMS-encrypted, TLS-only SNS topic with an optional email subscription.

    The key is customer managed because CloudWatch alarms cannot publish to a topic encrypted with
    the AWS managed SNS key (its key policy cannot grant CloudWatch).

    :param alert_email: address to subscribe; AWS emails it a confirmation link.
    """

    def __init__(self, scope: Construct, construct_id: str, *, alert_email: str | None) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            description="Encrypts the serverless-ml alerts topic",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.DESTROY,
            pending_window=cdk.Duration.days(7),
        )
        # enforce_ssl attaches a topic policy, which replaces SNS's default one: without an Allow for
        # CloudWatch no alarm would ever be delivered. Both grants name this account's alarms only
        # (the confused-deputy conditions AWS documents for CloudWatch alarm actions).
        alarms_of_this_account = _alarms_of_this_account(self)
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsOfThisAccount",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions=alarms_of_this_account,
            )
        )
        self.topic = sns.Topic(
            self, "Topic", master_key=self.key, enforce_ssl=True, display_name="serverless-ml alerts"
        )
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsOfThisAccount",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions=alarms_of_this_account,
            )
        )
        if alert_email is not None:
            self.topic.add_subscription(subscriptions.EmailSubscription(alert_email))

    def grant_publish(self, role: iam.IRole) -> None:
        """Let ``role`` publish to the topic (and use its key for that)."""
        self.topic.grant_publish(role)
        acknowledge(
            role,
            "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]",
            "Publishing to an encrypted topic needs the GenerateDataKey family on its key; "
            "the grant names that one key.",
        )

    def alarm_when(
        self,
        construct_id: str,
        *,
        metric: cloudwatch.IMetric,
        threshold: float,
        description: str,
        evaluation_periods: int = 1,
        below: bool = False,
        missing_data_breaches: bool = False,
    ) -> cloudwatch.Alarm:
        """Alarm (and notify the topic, also on recovery) when ``metric`` >= ``threshold``.

        :param construct_id: id of the alarm construct, e.g. ``DlqNotEmpty``.
        :param metric: the metric with its statistic and period.
        :param threshold: alarm at or above this value (below it with ``below``).
        :param description: what the alarm means and what to do; it is in the notification.
        :param evaluation_periods: consecutive periods that must breach.
        :param below: alarm when the metric is below ``threshold`` instead.
        :param missing_data_breaches: a period without data counts as breaching (for "did not
            happen" alarms on metrics that have no datapoint when nothing happened).
        :returns: the alarm.
        """
        alarm = cloudwatch.Alarm(
            self,
            construct_id,
            metric=metric,
            threshold=threshold,
            evaluation_periods=evaluation_periods,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD
            if below
            else cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING
            if missing_data_breaches
            else cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=description,
        )
        action = cloudwatch_actions.SnsAction(self.topic)
        alarm.add_alarm_action(action)
        alarm.add_ok_action(action)
        return alarm


def _alarms_of_this_account(scope: Construct) -> dict[str, dict[str, str]]:
    """``aws:SourceAccount`` = this account and ``aws:SourceArn`` like this region's alarm ARNs."""
    stack = cdk.Stack.of(scope)
    alarm_arns = stack.format_arn(
        service="cloudwatch", resource="alarm", resource_name="*", arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME
    )
    return {"StringEquals": {"aws:SourceAccount": stack.account}, "ArnLike": {"aws:SourceArn": alarm_arns}}
