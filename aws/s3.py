"""S3: the bucket and its notification configuration. One small function per operation."""

from __future__ import annotations

import json
from dataclasses import dataclass

from etlboot.engine import StepError

from . import NOTIFICATION_ID
from .clients import absent, call, error_code

NOTIFICATION_KINDS = ("TopicConfigurations", "QueueConfigurations", "LambdaFunctionConfigurations",
                      "EventBridgeConfiguration")


@dataclass
class BucketState:
    exists: bool
    region: str | None = None
    tags: dict | None = None


FOREIGN_BUCKET_HINT = "bucket names are global: pick another AWS_BUCKET, or use credentials of the bucket's account"


class ForeignBucket(StepError):
    """The bucket exists but belongs to another account (or these credentials may not reach it)."""


def head_bucket(s3, bucket: str, account: str) -> BucketState:
    """Whether the bucket exists and is this account's; a clear error when it is someone else's."""
    try:
        answer = s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=account)
    except Exception as exc:  # noqa: BLE001
        code = error_code(exc)
        if code in ("404", "NoSuchBucket", "NotFound"):
            return BucketState(False)
        if code in ("403", "AccessDenied", "Forbidden"):
            raise ForeignBucket(f"S3 bucket {bucket} exists but is not reachable with these credentials "
                                "(owned by another account, or access denied)", hint=FOREIGN_BUCKET_HINT) from None
        raise call_error(exc, f"look up S3 bucket {bucket}")
    headers = (answer.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
    return BucketState(True, region=headers.get("x-amz-bucket-region") or answer.get("BucketRegion"))


def bucket_listed(s3, bucket: str) -> bool | None:
    """Whether this account's bucket list holds the bucket (None: not allowed to list).

    HeadBucket's ExpectedBucketOwner already refuses another account's bucket on AWS; this second look
    also catches S3-compatible endpoints that ignore that header."""
    answer = absent(f"list the S3 buckets of this account named {bucket}", {"AccessDenied", "403"},
                    s3.list_buckets, Prefix=bucket)
    if answer is None:
        return None
    return any(b.get("Name") == bucket for b in answer.get("Buckets") or [])


def call_error(exc: BaseException, doing: str) -> StepError:
    from .clients import aws_error

    return aws_error(exc, doing)


def bucket_tags(s3, bucket: str) -> dict:
    answer = absent(f"read the tags of S3 bucket {bucket}", {"NoSuchTagSet", "NoSuchTagSetError"},
                    s3.get_bucket_tagging, Bucket=bucket)
    return {t["Key"]: t["Value"] for t in (answer or {}).get("TagSet") or []}


def create_bucket(s3, bucket: str, region: str) -> None:
    kwargs = {"Bucket": bucket}
    if region != "us-east-1":  # us-east-1 takes no LocationConstraint
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**kwargs)
    except Exception as exc:  # noqa: BLE001
        if error_code(exc) == "BucketAlreadyExists":
            raise StepError(f"S3 bucket name {bucket} is taken by another AWS account",
                            hint="bucket names are global: set another AWS_BUCKET") from None
        if error_code(exc) != "BucketAlreadyOwnedByYou":
            raise call_error(exc, f"create S3 bucket {bucket} in {region}")


def block_public_access(s3, bucket: str) -> None:
    # new buckets block public access by default since 2023; stated explicitly, whatever the account's defaults
    call(f"block public access on S3 bucket {bucket}", s3.put_public_access_block, Bucket=bucket,
         PublicAccessBlockConfiguration={"BlockPublicAcls": True, "IgnorePublicAcls": True,
                                         "BlockPublicPolicy": True, "RestrictPublicBuckets": True})


def put_bucket_tags(s3, bucket: str, tags: dict) -> None:
    """PutBucketTagging replaces the whole tag set: callers pass the merged set."""
    call(f"tag S3 bucket {bucket}", s3.put_bucket_tagging, Bucket=bucket,
         Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in sorted(tags.items())]})


def empty_and_delete_bucket(s3, bucket: str) -> int:
    """Delete every object (and version) and then the bucket. Returns the number of objects deleted."""
    deleted = 0
    paginator = s3.get_paginator("list_object_versions")
    for page in call(f"list objects of S3 bucket {bucket}", lambda: list(paginator.paginate(Bucket=bucket))):
        keys = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in (page.get("Versions") or []) + (page.get("DeleteMarkers") or [])]
        for start in range(0, len(keys), 1000):
            chunk = keys[start:start + 1000]
            call(f"delete objects of S3 bucket {bucket}", s3.delete_objects, Bucket=bucket,
                 Delete={"Objects": chunk, "Quiet": True})
            deleted += len(chunk)
    call(f"delete S3 bucket {bucket}", s3.delete_bucket, Bucket=bucket)
    return deleted


# -- notification configuration -------------------------------------------------------------------

def get_notification(s3, bucket: str) -> dict:
    answer = call(f"read the notification configuration of S3 bucket {bucket}",
                  s3.get_bucket_notification_configuration, Bucket=bucket)
    return {k: answer[k] for k in NOTIFICATION_KINDS if k in answer}


class DestinationNotValidated(StepError):
    """S3 could not yet publish a test message to the topic (a fresh topic policy takes a moment)."""


def put_notification(s3, bucket: str, configuration: dict) -> None:
    doing = f"write the notification configuration of S3 bucket {bucket}"
    try:
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=configuration)
    except Exception as exc:  # noqa: BLE001
        error = call_error(exc, doing)
        message = str(((getattr(exc, "response", None) or {}).get("Error") or {}).get("Message") or "")
        if error_code(exc) == "InvalidArgument" and "validate" in message.lower():
            raise DestinationNotValidated(str(error), hint="S3 may not send to the topic or queue (yet): check its "
                                          "access policy with `invoke aws.status`, then run again") from None
        raise error from None


OUR_EVENTS = ("s3:ObjectCreated:*",)


#: the destination kinds our entry can be of, and the field naming the destination
DESTINATIONS = {"TopicConfigurations": "TopicArn", "QueueConfigurations": "QueueArn"}


def our_entry(destination: str, prefix: str, suffix: str) -> dict:
    """Our entry for a topic or queue ARN (`arn:…:sns:…` or `arn:…:sqs:…`)."""
    field = "QueueArn" if destination.split(":")[2:3] == ["sqs"] else "TopicArn"
    return {
        "Id": NOTIFICATION_ID,
        field: destination,
        # every way an object is created: Put, Post, Copy and CompleteMultipartUpload (what `aws s3 cp` and
        # boto3 use above their multipart threshold) each have their own event name
        "Events": list(OUR_EVENTS),
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix},
                                           {"Name": "suffix", "Value": suffix}]}},
    }


def entry_kind(entry: dict) -> str:
    return next(kind for kind, field in DESTINATIONS.items() if field in entry)


def _normalize_entry(entry: dict) -> str:
    rules = ((entry.get("Filter") or {}).get("Key") or {}).get("FilterRules") or []
    return json.dumps({
        "Id": entry.get("Id"),
        **{field: entry.get(field) for field in DESTINATIONS.values() if field in entry},
        "Events": sorted(entry.get("Events") or []),
        "Rules": sorted((r["Name"].lower(), r["Value"]) for r in rules),
    }, sort_keys=True)


def find_entry(configuration: dict) -> dict | None:
    """Our entry (by its Id), whether it names a topic or a queue."""
    for kind in DESTINATIONS:
        for entry in configuration.get(kind) or []:
            if entry.get("Id") == NOTIFICATION_ID:
                return entry
    return None


def _without_ours(configuration: dict) -> dict:
    merged = json.loads(json.dumps(configuration))
    for kind in DESTINATIONS:
        kept = [e for e in merged.get(kind) or [] if e.get("Id") != NOTIFICATION_ID]
        if kept:
            merged[kind] = kept
        else:
            merged.pop(kind, None)
    return merged


def merge_notification(configuration: dict, entry: dict) -> tuple[dict, bool]:
    """`configuration` with our entry added or replaced by Id (also when it named the other kind of
    destination: switching AWS_DELIVERY moves it); every other entry kept as it was."""
    merged = _without_ours(configuration)
    current = find_entry(configuration)
    changed = current is None or _normalize_entry(current) != _normalize_entry(entry)
    kind = entry_kind(entry)
    merged[kind] = (merged.get(kind) or []) + [entry]
    return merged, changed


def remove_notification(configuration: dict) -> tuple[dict, bool]:
    return _without_ours(configuration), find_entry(configuration) is not None


# -- overlap: S3 refuses a configuration in which two entries could fire for the same object and event --

def _rules(entry: dict) -> dict[str, str]:
    rules = ((entry.get("Filter") or {}).get("Key") or {}).get("FilterRules") or []
    return {str(r.get("Name") or "").lower(): str(r.get("Value") or "") for r in rules}


def _events_overlap(a: str, b: str) -> bool:
    # "s3:ObjectCreated:*" covers every "s3:ObjectCreated:<kind>"
    if a == b:
        return True
    for wide, narrow in ((a, b), (b, a)):
        if wide.endswith(":*") and narrow.startswith(wide[:-1]):
            return True
    return False


def entries_overlap(a: dict, b: dict) -> bool:
    """True when S3 would reject both in one configuration: a common event type, and a key that could
    match both filters (one prefix starts the other, and one suffix ends the other; none = every key)."""
    if not any(_events_overlap(x, y) for x in a.get("Events") or [] for y in b.get("Events") or []):
        return False
    ra, rb = _rules(a), _rules(b)
    pa, pb = ra.get("prefix", ""), rb.get("prefix", "")
    sa, sb = ra.get("suffix", ""), rb.get("suffix", "")
    return (pa.startswith(pb) or pb.startswith(pa)) and (sa.endswith(sb) or sb.endswith(sa))


def overlapping_entries(configuration: dict, entry: dict) -> list[str]:
    """Ids (or destinations) of the other entries that overlap ours; ours (same Id) is replaced, not kept."""
    found = []
    for kind in NOTIFICATION_KINDS:
        if kind == "EventBridgeConfiguration":
            continue
        for other in configuration.get(kind) or []:
            if other.get("Id") == entry["Id"]:
                continue
            if entries_overlap(entry, other):
                found.append(other.get("Id") or other.get("TopicArn") or other.get("QueueArn")
                             or other.get("LambdaFunctionArn") or "?")
    return found
