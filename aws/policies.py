"""Policy documents as data: built here, compared as data (never as strings), merged by Sid.

- The topic's access (resource) policy gets ONE statement of ours (Sid `TOPIC_POLICY_SID`): the S3
  service may publish to this topic only for events of this bucket in this account
  (`aws:SourceArn` + `aws:SourceAccount`). Other statements of the policy are kept as they are.
- The SNS EventSource's IAM user gets an identity policy with exactly the three calls the Argo Events
  SNS source makes (Subscribe, ConfirmSubscription, Unsubscribe) on this topic. The tutorial's "inline
  policy" carried a `Principal`, which an identity policy must not have (IAM rejects it).
- The queue's access policy (AWS_DELIVERY=sqs) gets ONE statement of ours (Sid `QUEUE_POLICY_SID`): the
  S3 service may send this bucket's events of this account to the queue, nothing else.
- The SQS EventSource's IAM user may receive, delete and read the attributes of messages of that one
  queue, and look its URL up (`GetQueueUrl`, `ReceiveMessage`, `DeleteMessage`: the calls the Argo Events
  SQS source makes; `GetQueueAttributes` for a look at the depth with the same key).
- The ETL job's IAM user may list and read `input/` and write and delete in `output/` of this bucket,
  nothing else.
"""

from __future__ import annotations

import json
from typing import Any

from . import INPUT_PREFIX, OUTPUT_PREFIX, QUEUE_POLICY_SID, TOPIC_POLICY_SID

VERSION = "2012-10-17"

#: the only calls the Argo Events SNS event source makes (FACTS.md §1)
SNS_EVENTSOURCE_ACTIONS = ["sns:ConfirmSubscription", "sns:Subscribe", "sns:Unsubscribe"]
#: what the Argo Events SQS event source calls (v1.9.10 `awssqs/start.go`: GetQueueUrl, ReceiveMessage,
#: DeleteMessage), and GetQueueAttributes (read-only: the queue's depth)
SQS_EVENTSOURCE_ACTIONS = ["sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:ReceiveMessage"]


def bucket_arn(partition: str, bucket: str) -> str:
    return f"arn:{partition}:s3:::{bucket}"


def topic_arn(partition: str, region: str, account: str, topic: str) -> str:
    return f"arn:{partition}:sns:{region}:{account}:{topic}"


def queue_arn(partition: str, region: str, account: str, queue: str) -> str:
    return f"arn:{partition}:sqs:{region}:{account}:{queue}"


def _from_this_bucket(sid: str, action: str, resource: str, bucket: str, account: str, partition: str) -> dict:
    """Lets the S3 service `action` on `resource` for events of this bucket in this account only."""
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": {"Service": "s3.amazonaws.com"},
        "Action": action,
        "Resource": resource,
        "Condition": {
            "StringEquals": {"aws:SourceAccount": account},
            "ArnLike": {"aws:SourceArn": bucket_arn(partition, bucket)},
        },
    }


def queue_send_statement(queue: str, bucket: str, account: str, partition: str = "aws") -> dict:
    """Lets S3 send this bucket's events to the queue, and nothing else."""
    return _from_this_bucket(QUEUE_POLICY_SID, "SQS:SendMessage", queue, bucket, account, partition)


def _allow_on(sid: str, actions: list[str], resource: str) -> dict:
    """An identity policy of one statement: `actions` on `resource`, nothing else."""
    return {"Version": VERSION,
            "Statement": [{"Sid": sid, "Effect": "Allow", "Action": list(actions), "Resource": resource}]}


def sqs_user_policy(queue: str) -> dict:
    return _allow_on("ArgoEventsSqsEventSource", SQS_EVENTSOURCE_ACTIONS, queue)


def topic_publish_statement(topic: str, bucket: str, account: str, partition: str = "aws") -> dict:
    """Lets S3 publish this bucket's events to the topic, and nothing else."""
    return _from_this_bucket(TOPIC_POLICY_SID, "SNS:Publish", topic, bucket, account, partition)


def sns_user_policy(topic: str) -> dict:
    return _allow_on("ArgoEventsSnsEventSource", SNS_EVENTSOURCE_ACTIONS, topic)


def s3_user_policy(bucket: str, partition: str = "aws") -> dict:
    arn = bucket_arn(partition, bucket)
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "ListInput",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": arn,
                "Condition": {"StringLike": {"s3:prefix": [INPUT_PREFIX, INPUT_PREFIX + "*"]}},
            },
            {"Sid": "ReadInput", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{arn}/{INPUT_PREFIX}*"},
            {
                # AbortMultipartUpload: boto3 uploads large results in parts and aborts them on failure
                "Sid": "WriteOutput",
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
                "Resource": f"{arn}/{OUTPUT_PREFIX}*",
            },
            {
                # s3_etl.py deletes a stale output/<name>.rejects.csv when a fixed file is uploaded again;
                # input/ stays undeletable for the job
                "Sid": "DeleteOutput",
                "Effect": "Allow",
                "Action": ["s3:DeleteObject"],
                "Resource": f"{arn}/{OUTPUT_PREFIX}*",
            },
        ],
    }


# -- comparison -----------------------------------------------------------------------------------

def parse(document: str | dict | None) -> dict | None:
    """A policy from the API: IAM returns it as a dict (URL-decoded by boto3), SNS as a JSON string."""
    if document is None or document == "":
        return None
    if isinstance(document, dict):
        return document
    return json.loads(document)


def _listify(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def normalize(value: Any, key: str = "") -> Any:
    """Canonical form: single values and one-element lists are equal, order of sets does not matter,
    action names are case-insensitive (`SNS:Publish` == `sns:publish`)."""
    if key == "Principal" and isinstance(value, dict):
        return {k: sorted(set(_listify(v))) for k, v in sorted(value.items())}
    if key == "Condition" and isinstance(value, dict):
        return {op: {k.lower(): sorted({str(x) for x in _listify(v)}) for k, v in sorted((block or {}).items())}
                for op, block in sorted(value.items())}
    if isinstance(value, dict):
        return {k: normalize(v, k) for k, v in sorted(value.items())}
    if key in ("Action", "NotAction"):
        return sorted({a.lower() for a in _listify(value)})
    if key in ("Resource", "NotResource") or isinstance(value, list):
        items = [normalize(v) for v in _listify(value)]
        try:
            return sorted(set(items))
        except TypeError:
            return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    return value


def same_policy(a: dict | None, b: dict | None) -> bool:
    if a is None or b is None:
        return a is b
    return _normalize_document(a) == _normalize_document(b)


def _normalize_document(doc: dict) -> dict:
    doc = dict(doc)
    statements = [normalize(s) for s in _listify(doc.pop("Statement", []))]
    out = normalize(doc)
    out["Statement"] = sorted(statements, key=lambda s: json.dumps(s, sort_keys=True))
    return out


def merge_statement(policy: dict | None, statement: dict, *, version: str = "2008-10-17") -> tuple[dict, bool]:
    """The policy with `statement` replacing the one of the same Sid (or added); other statements kept.

    Returns (new policy, changed). A policy without our statement, or with a different one, changes.
    """
    policy = json.loads(json.dumps(policy)) if policy else {"Version": version, "Statement": []}
    statements = _listify(policy.get("Statement") or [])
    sid = statement["Sid"]
    kept = [s for s in statements if s.get("Sid") != sid]
    current = [s for s in statements if s.get("Sid") == sid]
    changed = len(current) != 1 or normalize(current[0]) != normalize(statement)
    policy["Statement"] = kept + [statement]
    return policy, changed


def remove_statement(policy: dict | None, sid: str) -> tuple[dict | None, bool]:
    if not policy:
        return policy, False
    statements = _listify(policy.get("Statement") or [])
    kept = [s for s in statements if s.get("Sid") != sid]
    if len(kept) == len(statements):
        return policy, False
    policy = dict(policy)
    policy["Statement"] = kept
    return policy, True


def dumps(policy: dict) -> str:
    return json.dumps(policy, separators=(",", ":"), sort_keys=False)
