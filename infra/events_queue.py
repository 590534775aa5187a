"""The prediction events queue and its dead-letter queue.

Predict sends one event per prediction; the writer consumes them in batches. A message that fails
``MAX_RECEIVE_COUNT`` times moves to the DLQ, which keeps it longer than the queue would so that
``sml dlq replay`` has time to bring it back. SQS counts a message's retention from its original
enqueue time, also in the DLQ: a message stays ``DLQ_RETENTION`` after predict first sent it.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_sqs as sqs
from constructs import Construct

MAX_RECEIVE_COUNT = 5
QUEUE_RETENTION = cdk.Duration.days(4)
DLQ_RETENTION = cdk.Duration.days(14)

# AWS's rule for Lambda SQS sources: visibility >= 6 x function timeout (+ the batching window),
# so a batch still being retried is not handed to a second consumer.
_VISIBILITY_PER_CONSUMER_TIMEOUT = 6


class EventsQueue(Construct):
    """Standard queue + DLQ, both SSE-SQS encrypted and TLS-only.

    :param consumer_timeout: the writer function's timeout.
    :param batching_window: the writer's maximum batching window.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, consumer_timeout: cdk.Duration, batching_window: cdk.Duration
    ) -> None:
        super().__init__(scope, construct_id)
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=DLQ_RETENTION,
        )
        visibility = consumer_timeout.to_seconds() * _VISIBILITY_PER_CONSUMER_TIMEOUT + batching_window.to_seconds()
        self.queue = sqs.Queue(
            self,
            "Queue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=QUEUE_RETENTION,
            visibility_timeout=cdk.Duration.seconds(visibility),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letter_queue, max_receive_count=MAX_RECEIVE_COUNT),
        )
