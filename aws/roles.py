"""EKS: IAM roles instead of IAM users' long-lived access keys (AWS_EVENTSOURCE_ROLE_ARN, AWS_ETL_ROLE_ARN).

- The EventSource (SNS or SQS) gets the source's own `roleARN` and no `accessKey`/`secretKey`. Argo Events
  (v1.9.10 `pkg/eventsources/common/aws/aws.go`) then assumes that role with STS from the default credential
  chain of its pod: IRSA, EKS Pod Identity or the node's instance role. So its IAM user, key and Secret are
  not made.
- The S3 ETL runs as the ServiceAccount `s3-etl` (manifests/aws/etl-serviceaccount.yaml), annotated for IRSA
  with the role (or associated with it through Pod Identity); the WorkflowTemplate carries no key variables,
  so boto3 takes the pod's identity. Its IAM user, key and Secret are not made.

The tool does not create or change these roles (their trust policy names the cluster's OIDC provider or
Pod Identity, which is the cluster owner's to decide); docs/aws.md shows the permission policy each needs,
the same document as the IAM user's inline policy.
"""

from __future__ import annotations

import copy

ETL_SERVICE_ACCOUNT = "s3-etl"
#: the Kubernetes objects the ETL role needs (manifests/aws/etl-serviceaccount.yaml)
ETL_ROLE_OBJECTS = (("ServiceAccount", ETL_SERVICE_ACCOUNT), ("RoleBinding", "s3-etl-executor"))
KEY_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def eventsource_role(settings) -> str:
    return settings.values.get("AWS_EVENTSOURCE_ROLE_ARN") or ""


def etl_role(settings) -> str:
    return settings.values.get("AWS_ETL_ROLE_ARN") or ""


def with_roles(doc: dict, settings) -> dict:
    """`doc` (one rendered object of manifests/aws) as it must be when the roles are set; as is otherwise."""
    kind = doc.get("kind")
    if kind == "EventSource" and eventsource_role(settings):
        doc = copy.deepcopy(doc)
        for section in ("sns", "sqs"):
            for source in (doc["spec"].get(section) or {}).values():
                source.pop("accessKey", None)
                source.pop("secretKey", None)
                source["roleARN"] = eventsource_role(settings)
    if kind == "WorkflowTemplate" and etl_role(settings):
        doc = copy.deepcopy(doc)
        doc["spec"]["serviceAccountName"] = ETL_SERVICE_ACCOUNT
        for template in doc["spec"].get("templates") or []:
            container = template.get("container") or {}
            container["env"] = [e for e in container.get("env") or [] if e.get("name") not in KEY_VARIABLES]
    return doc
