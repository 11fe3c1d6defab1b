"""IAM: the two users, their inline policy and access keys. One small function per operation.

Access key ids are handled here but never put into a message: messages name the user only.
"""

from __future__ import annotations

from . import policies
from .clients import absent, call


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


def delete_user(iam, name: str) -> None:
    """Delete the user after what IAM requires gone first: inline and attached policies, group
    memberships and access keys. Anything else someone added (console password, MFA, ...) makes
    IAM refuse with DeleteConflict, reported as is."""
    for policy_name in call(f"list inline policies of IAM user {name}", iam.list_user_policies,
                            UserName=name).get("PolicyNames") or []:
        call(f"delete inline policy of IAM user {name}", iam.delete_user_policy, UserName=name,
             PolicyName=policy_name)
    for attached in call(f"list attached policies of IAM user {name}", iam.list_attached_user_policies,
                         UserName=name).get("AttachedPolicies") or []:
        call(f"detach a policy from IAM user {name}", iam.detach_user_policy, UserName=name,
             PolicyArn=attached["PolicyArn"])
    for group in call(f"list groups of IAM user {name}", iam.list_groups_for_user,
                      UserName=name).get("Groups") or []:
        call(f"remove IAM user {name} from a group", iam.remove_user_from_group, UserName=name,
             GroupName=group["GroupName"])
    for key in access_keys(iam, name):
        delete_access_key(iam, name, key["AccessKeyId"])
    absent(f"delete IAM user {name}", {"NoSuchEntity"}, iam.delete_user, UserName=name)
