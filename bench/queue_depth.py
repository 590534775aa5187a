"""Per-call SQS latency by queue depth on each local AWS endpoint: is it flat in depth?

Median of SendMessageBatch(10), ReceiveMessage(10) and ReceiveMessage(10) + DeleteMessageBatch
of what it got, at each depth (visible messages), the same boto3 client and the same messages for
every emulator. Each emulator's figures are read as ratios to its own empty queue.

Usage: ``python bench/queue_depth.py [--emulators fauxqs,ministack] [--depths 0,1000,5000,20000]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

BODY = json.dumps({"prediction_id": "0190a8c2-0000-7000-8000-000000000000", "features": {f"f{i}": i * 1.5 for i in range(11)}, "prediction": 1})


def queue_latency_by_depth(emulator: str, depths: list[int], samples: int = 21) -> list[dict[str, Any]]:
    """Median ms of each call at each depth, with ``*_ratio`` = that median / the same at the first depth."""
    import boto3

    from sml.local.aws_endpoint import start_aws_server

    server = start_aws_server(emulator, host="127.0.0.1", port=0)
    try:
        sqs = boto3.client("sqs", endpoint_url=server.url, region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench")
        queue_url = sqs.create_queue(QueueName="depth", Attributes={"VisibilityTimeout": "600"})["QueueUrl"]
        entries = [{"Id": str(i), "MessageBody": BODY} for i in range(10)]
        for _ in range(30):  # warm-up, so the first depth does not carry a JIT's or a cache's first calls
            sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
            _delete(sqs, queue_url, sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []))
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
        depth, rows = int(attributes["ApproximateNumberOfMessages"]), []
        for target in depths:
            while depth < target:
                sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
                depth += 10
            send_ms, receive_ms, receive_delete_ms = [], [], []
            for _ in range(samples):
                started = time.perf_counter()
                sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
                send_ms.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]).get("Messages", [])
                received = time.perf_counter()
                _delete(sqs, queue_url, messages)
                receive_ms.append((received - started) * 1000)
                receive_delete_ms.append((time.perf_counter() - started) * 1000)
                depth += 10 - len(messages)
            rows.append({
                "emulator": emulator, "depth": target, "send_ms": statistics.median(send_ms),
                "receive_ms": statistics.median(receive_ms), "receive_delete_ms": statistics.median(receive_delete_ms),
            })  # fmt: skip
        for row in rows:
            for measure in ("send", "receive", "receive_delete"):
                row[f"{measure}_ratio"] = row[f"{measure}_ms"] / rows[0][f"{measure}_ms"]
            print(
                f"  {emulator:<9} depth {row['depth']:>6}: send {row['send_ms']:6.1f} ms ({row['send_ratio']:.2f}x),"
                f" receive {row['receive_ms']:6.1f} ms ({row['receive_ratio']:.2f}x),"
                f" receive+delete {row['receive_delete_ms']:6.1f} ms ({row['receive_delete_ratio']:.2f}x)", flush=True,
            )
        return rows
    finally:
        server.stop()


def _delete(sqs: Any, queue_url: str, messages: list[dict[str, Any]]) -> None:
    if messages:
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emulators", default="fauxqs,ministack")
    parser.add_argument("--depths", default="0,1000,5000,20000")
    args = parser.parse_args()
    depths = [int(depth) for depth in args.depths.split(",")]
    for emulator in args.emulators.split(","):
        queue_latency_by_depth(emulator, depths)


if __name__ == "__main__":
    main()
