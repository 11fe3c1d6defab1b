"""IAM: the two users, their inline policy and access keys. One small function per operation.

Access key ids are handled here but never put into a message: messages name the user only.
"""

from __future__ import annotations

from etlboot.engine import StepError

from . import policies
from .clients import absent, aws_error, call, error_code


def get_user(iam, name: str) -> dict | None:
    answer = absent(f"look up IAM user {name}", {"NoSuchEntity"}, iam.get_user, UserName=name)
    return None if answer is None else answer["User"]


def user_tags(iam, name: str) -> dict:
    answer = call(f"read the tags of IAM user {name}", iam.list_user_tags, UserName=name)
    return {t["Key"]: t["Value"] for t in answer.get("Tags") or []}


def create_user(iam, name: str, tags: list[dict]) -> None:
    call(f"create IAM user {name}", iam.create_user, UserName=name, Tags=tags)


def user_policy(iam, name: str, policy_name: str) -> dict | None:
    answer = absent(f"read inline policy {policy_name} of IAM user {name}", {"NoSuchEntity"},
                    iam.get_user_policy, UserName=name, PolicyName=policy_name)
    return None if answer is None else policies.parse(answer.get("PolicyDocument"))


def put_user_policy(iam, name: str, policy_name: str, document: dict) -> None:
    call(f"put inline policy {policy_name} on IAM user {name}", iam.put_user_policy, UserName=name,
         PolicyName=policy_name, PolicyDocument=policies.dumps(document))


def access_keys(iam, name: str) -> list[dict]:
    """Metadata of the user's access keys (id, status, creation date); never the secret."""
    answer = absent(f"list the access keys of IAM user {name}", {"NoSuchEntity"}, iam.list_access_keys,
                    UserName=name)
    return list((answer or {}).get("AccessKeyMetadata") or [])


def create_access_key(iam, name: str) -> tuple[str, str]:
    key = call(f"create an access key for IAM user {name}", iam.create_access_key, UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def delete_access_key(iam, name: str, key_id: str) -> None:
    absent(f"delete an access key of IAM user {name}", {"NoSuchEntity"}, iam.delete_access_key,
           UserName=name, AccessKeyId=key_id)


def tag_user(iam, name: str, tags: dict) -> None:
    call(f"tag IAM user {name}", iam.tag_user, UserName=name,
         Tags=[{"Key": k, "Value": v} for k, v in tags.items()])


def untag_user(iam, name: str, keys: list[str]) -> None:
    if keys:
        call(f"untag IAM user {name}", iam.untag_user, UserName=name, TagKeys=keys)


def delete_user_policy(iam, name: str, policy_name: str) -> None:
    absent(f"delete inline policy {policy_name} of IAM user {name}", {"NoSuchEntity"}, iam.delete_user_policy,
           UserName=name, PolicyName=policy_name)


# -- what else a user holds (teardown keeps a user that holds anything it did not make) -------------

def _paged(doing: str, iam, operation: str, result_key: str, name: str) -> list:
    paginator = iam.get_paginator(operation)
    pages = call(doing, lambda: list(paginator.paginate(UserName=name)))
    return [item for page in pages for item in page.get(result_key) or []]


def inline_policy_names(iam, name: str) -> list[str]:
    return _paged(f"list inline policies of IAM user {name}", iam, "list_user_policies", "PolicyNames", name)


def attached_policy_names(iam, name: str) -> list[str]:
    return [p["PolicyName"] for p in _paged(f"list attached policies of IAM user {name}", iam,
                                            "list_attached_user_policies", "AttachedPolicies", name)]


def group_names(iam, name: str) -> list[str]:
    return [g["GroupName"] for g in _paged(f"list groups of IAM user {name}", iam, "list_groups_for_user",
                                           "Groups", name)]


def has_login_profile(iam, name: str) -> bool:
    """A console password (GetLoginProfile answers NoSuchEntity when there is none)."""
    return absent(f"look up the console password of IAM user {name}", {"NoSuchEntity"}, iam.get_login_profile,
                  UserName=name) is not None


def mfa_devices(iam, name: str) -> list[dict]:
    return _paged(f"list MFA devices of IAM user {name}", iam, "list_mfa_devices", "MFADevices", name)


def ssh_public_keys(iam, name: str) -> list[dict]:
    return _paged(f"list SSH public keys of IAM user {name}", iam, "list_ssh_public_keys", "SSHPublicKeys", name)


def signing_certificates(iam, name: str) -> list[dict]:
    return _paged(f"list signing certificates of IAM user {name}", iam, "list_signing_certificates",
                  "Certificates", name)


class UserNotEmpty(StepError):
    """IAM refused DeleteUser because the user still holds something (DeleteConflict)."""


def delete_user(iam, name: str) -> None:
    """Only the DeleteUser call: the caller removed what it made; whatever else is on the user makes IAM
    refuse (DeleteConflict), and the user is then kept, never emptied by force."""
    try:
        iam.delete_user(UserName=name)
    except Exception as exc:  # noqa: BLE001
        code = error_code(exc)
        if code == "NoSuchEntity":
            return
        if code == "DeleteConflict":
            raise UserNotEmpty(str(aws_error(exc, f"delete IAM user {name}"))) from None
        raise aws_error(exc, f"delete IAM user {name}") from None
