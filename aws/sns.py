"""SNS: the topic, its tags and access policy, its subscriptions. One small function per operation."""

from __future__ import annotations

from . import policies
from .clients import absent, call


def topic_attributes(sns, arn: str) -> dict | None:
    answer = absent(f"look up SNS topic {arn}", {"NotFound", "NotFoundException"}, sns.get_topic_attributes,
                    TopicArn=arn)
    return None if answer is None else answer.get("Attributes") or {}


def topic_tags(sns, arn: str) -> dict:
    answer = call(f"read the tags of SNS topic {arn}", sns.list_tags_for_resource, ResourceArn=arn)
    return {t["Key"]: t["Value"] for t in answer.get("Tags") or []}


def create_topic(sns, name: str, tags: list[dict]) -> str:
    return call(f"create SNS topic {name}", sns.create_topic, Name=name, Tags=tags)["TopicArn"]


def set_topic_policy(sns, arn: str, policy: dict) -> None:
    call(f"set the access policy of SNS topic {arn}", sns.set_topic_attributes, TopicArn=arn,
         AttributeName="Policy", AttributeValue=policies.dumps(policy))


def delete_topic(sns, arn: str) -> None:
    call(f"delete SNS topic {arn}", sns.delete_topic, TopicArn=arn)


def subscriptions(sns, arn: str) -> list[dict]:
    out: list[dict] = []
    token = None
    while True:
        kwargs = {"TopicArn": arn, **({"NextToken": token} if token else {})}
        answer = absent(f"list the subscriptions of SNS topic {arn}", {"NotFound"},
                        sns.list_subscriptions_by_topic, **kwargs)
        if answer is None:
            return out
        out.extend(answer.get("Subscriptions") or [])
        token = answer.get("NextToken")
        if not token:
            return out


def subscription_pending(sns, subscription_arn: str) -> bool:
    """SNS lists a subscription awaiting confirmation with the ARN `PendingConfirmation`."""
    if subscription_arn in ("PendingConfirmation", "pending confirmation"):
        return True
    answer = absent("read a subscription's attributes", {"NotFound"}, sns.get_subscription_attributes,
                    SubscriptionArn=subscription_arn)
    return bool(answer) and str((answer.get("Attributes") or {}).get("PendingConfirmation")).lower() == "true"


def unsubscribe(sns, subscription_arn: str) -> None:
    call("remove a subscription of the SNS topic", sns.unsubscribe, SubscriptionArn=subscription_arn)
