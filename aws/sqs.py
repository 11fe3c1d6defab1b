"""SQS: the queue and its dead-letter queue, their attributes and tags. One small function per operation.

A queue that does not exist answers `AWS.SimpleQueueService.NonExistentQueue` (JSON protocol; the query
protocol's code is `QueueDoesNotExist`): both mean "not there" and return None.
"""

from __future__ import annotations

from .clients import absent, call

NOT_FOUND = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"}
#: what `queue_attributes` reads: the ones we set, the ARN, and the depth `aws.status` shows
ATTRIBUTES = ["QueueArn", "Policy", "RedrivePolicy", "MessageRetentionPeriod", "ApproximateNumberOfMessages",
              "ApproximateNumberOfMessagesNotVisible"]


def queue_url(sqs, name: str) -> str | None:
    answer = absent(f"look up SQS queue {name}", NOT_FOUND, sqs.get_queue_url, QueueName=name)
    return None if answer is None else answer["QueueUrl"]


def queue_attributes(sqs, url: str) -> dict | None:
    answer = absent(f"read the attributes of SQS queue {url.rsplit('/', 1)[-1]}", NOT_FOUND,
                    sqs.get_queue_attributes, QueueUrl=url, AttributeNames=ATTRIBUTES)
    return None if answer is None else answer.get("Attributes") or {}


def queue_tags(sqs, url: str) -> dict:
    answer = call(f"read the tags of SQS queue {url.rsplit('/', 1)[-1]}", sqs.list_queue_tags, QueueUrl=url)
    return dict(answer.get("Tags") or {})


def create_queue(sqs, name: str, attributes: dict[str, str], tags: dict[str, str]) -> str:
    return call(f"create SQS queue {name}", sqs.create_queue, QueueName=name, Attributes=attributes,
                tags=tags)["QueueUrl"]


def set_queue_attributes(sqs, url: str, attributes: dict[str, str]) -> None:
    call(f"set the attributes of SQS queue {url.rsplit('/', 1)[-1]}", sqs.set_queue_attributes, QueueUrl=url,
         Attributes=attributes)


def delete_queue(sqs, url: str) -> None:
    absent(f"delete SQS queue {url.rsplit('/', 1)[-1]}", NOT_FOUND, sqs.delete_queue, QueueUrl=url)
