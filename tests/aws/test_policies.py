"""The policy documents: least privilege, checked as data; merging by Sid keeps everything else."""

from __future__ import annotations

import json

import pytest

from aws import policies

TOPIC = "arn:aws:sns:eu-west-1:123456789012:argo-etl-s3-events"
BUCKET = "my-etl-bucket"


def statements(doc):
    items = doc["Statement"]
    return items if isinstance(items, list) else [items]


def as_list(value):
    return value if isinstance(value, list) else [value]


def grants(doc) -> set[tuple[str, str]]:
    return {(action.lower(), resource) for s in statements(doc) if s["Effect"] == "Allow"
            for action in as_list(s["Action"]) for resource in as_list(s["Resource"])}


@pytest.mark.parametrize("doc", [policies.sns_user_policy(TOPIC), policies.s3_user_policy(BUCKET)],
                         ids=["sns-user", "s3-user"])
def test_identity_policies_are_valid_and_least_privilege(doc):
    json.loads(policies.dumps(doc))
    assert doc["Version"] == "2012-10-17"
    for statement in statements(doc):
        assert "Principal" not in statement and "NotPrincipal" not in statement  # identity policy: no principal
        assert "NotAction" not in statement and "NotResource" not in statement
        assert statement["Effect"] == "Allow"
        for action in as_list(statement["Action"]):
            assert "*" not in action
        for resource in as_list(statement["Resource"]):
            assert resource != "*"


def test_sns_user_may_only_do_what_the_event_source_calls_on_this_topic():
    assert grants(policies.sns_user_policy(TOPIC)) == {
        ("sns:subscribe", TOPIC), ("sns:confirmsubscription", TOPIC), ("sns:unsubscribe", TOPIC)}


def test_s3_user_may_list_and_read_input_and_write_output_only():
    doc = policies.s3_user_policy(BUCKET)
    arn = f"arn:aws:s3:::{BUCKET}"
    assert grants(doc) == {("s3:listbucket", arn), ("s3:getobject", f"{arn}/input/*"),
                           ("s3:putobject", f"{arn}/output/*"), ("s3:abortmultipartupload", f"{arn}/output/*"),
                           ("s3:deleteobject", f"{arn}/output/*")}
    # object wildcards only below the two prefixes; listing limited to input/
    listing = next(s for s in statements(doc) if s["Action"] == "s3:ListBucket")
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["input/", "input/*"]}}


def test_topic_statement_lets_only_s3_publish_for_this_bucket_and_account():
    statement = policies.topic_publish_statement(TOPIC, BUCKET, "123456789012")
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert as_list(statement["Action"]) == ["SNS:Publish"] and statement["Resource"] == TOPIC
    assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"},
                                      "ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{BUCKET}"}}
    cn = policies.topic_publish_statement(TOPIC, BUCKET, "123456789012", partition="aws-cn")
    assert cn["Condition"]["ArnLike"]["aws:SourceArn"] == f"arn:aws-cn:s3:::{BUCKET}"


def test_merge_by_sid_keeps_other_statements_and_is_stable():
    ours = policies.topic_publish_statement(TOPIC, BUCKET, "123456789012")
    default = {"Version": "2008-10-17", "Id": "__default_policy_ID", "Statement": [
        {"Sid": "__default_statement_ID", "Effect": "Allow", "Principal": {"AWS": "*"},
         "Action": ["SNS:Publish"], "Resource": TOPIC}]}
    merged, changed = policies.merge_statement(default, ours)
    assert changed and [s["Sid"] for s in merged["Statement"]] == ["__default_statement_ID", ours["Sid"]]
    assert merged["Id"] == "__default_policy_ID"
    again, changed = policies.merge_statement(merged, ours)
    assert not changed and again == merged
    # AWS may hand the statement back reshaped: one-element lists, other key case; still the same
    reshaped = json.loads(json.dumps(ours))
    reshaped["Action"] = ["sns:publish"]
    reshaped["Condition"]["StringEquals"] = {"AWS:SourceAccount": ["123456789012"]}
    _, changed = policies.merge_statement({"Statement": [reshaped]}, ours)
    assert not changed
    # a different bucket in our statement is a change, and replaces ours only
    drifted = json.loads(json.dumps(ours))
    drifted["Condition"]["ArnLike"]["aws:SourceArn"] = "arn:aws:s3:::other"
    fixed, changed = policies.merge_statement({"Statement": [default["Statement"][0], drifted]}, ours)
    assert changed and fixed["Statement"] == [default["Statement"][0], ours]
    removed, changed = policies.remove_statement(fixed, ours["Sid"])
    assert changed and removed["Statement"] == [default["Statement"][0]]


def test_same_policy_compares_as_data():
    doc = policies.s3_user_policy(BUCKET)
    shuffled = json.loads(json.dumps(doc))
    shuffled["Statement"].reverse()
    shuffled["Statement"][0]["Action"] = list(reversed(shuffled["Statement"][0]["Action"]))
    assert policies.same_policy(doc, shuffled)
    wider = json.loads(json.dumps(doc))
    wider["Statement"][1]["Resource"] = f"arn:aws:s3:::{BUCKET}/*"
    assert not policies.same_policy(doc, wider)
    assert not policies.same_policy(doc, None)


def test_s3_user_may_delete_in_output_only_and_nothing_else_was_widened():
    """s3_etl.py deletes a stale output/<name>.rejects.csv: exactly s3:DeleteObject on output/*, added
    to what the job could already do (compared as data)."""
    arn = f"arn:aws:s3:::{BUCKET}"
    before = {("s3:listbucket", arn), ("s3:getobject", f"{arn}/input/*"), ("s3:putobject", f"{arn}/output/*"),
              ("s3:abortmultipartupload", f"{arn}/output/*")}
    now = grants(policies.s3_user_policy(BUCKET))
    assert now - before == {("s3:deleteobject", f"{arn}/output/*")}
    assert before <= now
    deleting = {resource for action, resource in now if "delete" in action}
    assert deleting == {f"{arn}/output/*"}  # never input/, never the bucket itself
    cn = grants(policies.s3_user_policy(BUCKET, partition="aws-cn"))
    assert ("s3:deleteobject", f"arn:aws-cn:s3:::{BUCKET}/output/*") in cn


def test_a_user_with_the_earlier_policy_gets_the_delete_permission(aws_env, aws_server, cluster, admin):
    """On moto: the inline policy an earlier version put on the ETL user is drift, replaced by the next
    setup; a run after that writes nothing."""
    from aws import TAGS, USER_POLICY_NAME
    from aws.iam_steps import UserStep
    from aws.preflight_steps import PreflightStep

    from aws_testkit import run_steps

    earlier = policies.s3_user_policy(aws_env["AWS_BUCKET"])
    earlier["Statement"] = [st for st in earlier["Statement"] if st["Sid"] != "DeleteOutput"]
    admin.iam.create_user(UserName="argo-etl-s3", Tags=TAGS)
    admin.iam.put_user_policy(UserName="argo-etl-s3", PolicyName=USER_POLICY_NAME, PolicyDocument=json.dumps(earlier))

    assert run_steps("up", PreflightStep(need_webhook=False), UserStep("s3"))[0] == 0
    assert aws_server.writes() == ["iam:PutUserPolicy"]
    live = admin.iam.get_user_policy(UserName="argo-etl-s3", PolicyName=USER_POLICY_NAME)["PolicyDocument"]
    assert policies.same_policy(live, policies.s3_user_policy(aws_env["AWS_BUCKET"]))
    arn = f"arn:aws:s3:::{aws_env['AWS_BUCKET']}"
    assert ("s3:deleteobject", f"{arn}/output/*") in grants(live)

    aws_server.clear()
    assert run_steps("up", PreflightStep(need_webhook=False), UserStep("s3"))[0] == 0
    assert aws_server.writes() == []
