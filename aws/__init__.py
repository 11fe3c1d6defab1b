"""The AWS variant of the pipeline: S3 bucket -> SQS queue -> Argo Events SQS EventSource -> workflow
(`AWS_DELIVERY=sqs`, the default), or S3 bucket -> SNS topic -> the SNS EventSource's public webhook
(`AWS_DELIVERY=sns-webhook`, the tutorial's way).

Small modules, one per concern:

- ``clients``  boto3 clients for one run (region/profile/endpoint from settings, standard retries,
  a record of every call, a guard that refuses writes during a dry run);
- ``policies`` the three policy documents as data (topic access policy statement, the two IAM
  identity policies) and their comparison;
- ``s3`` / ``sns`` / ``sqs`` / ``iam``  one small function per AWS operation, "not found" returned as None;
- ``plan``     intended calls: the same list is printed by ``--dry-run`` and executed by a run;
- ``steps``    the engine steps ``aws.setup`` / ``aws.status`` / ``aws.teardown`` run (``sqs_steps``: the
  queue steps and the step lists of the sqs delivery);
- ``demo``     ``demo.upload --target aws``.

Everything created carries the tag ``managed-by=argo-etl-bootstrap`` (the bucket notification entry
is ours by its Id, the topic policy statement by its Sid, the inline user policy by its name; an access
key, which cannot be tagged, by a tag on its user named after the key id; the queue policy statement
by its Sid). Teardown deletes only those;
a user that also holds something else (another key, a policy, a group) is kept, without our tag.
"""

from etlboot import MANAGER

TAG_KEY = "managed-by"
TAG_VALUE = MANAGER
TAGS = [{"Key": TAG_KEY, "Value": TAG_VALUE}]

#: Id of our entry in the bucket's notification configuration (the configuration has no tags)
NOTIFICATION_ID = "argo-etl-bootstrap-input-csv"
INPUT_PREFIX = "input/"
OUTPUT_PREFIX = "output/"
INPUT_SUFFIX = ".csv"
#: Sid of our statement in the topic's access policy
TOPIC_POLICY_SID = "ArgoEtlBootstrapS3Publish"
#: Sid of our statement in the queue's access policy
QUEUE_POLICY_SID = "ArgoEtlBootstrapS3Send"
#: name of the inline policy put on each of our IAM users
USER_POLICY_NAME = "argo-etl-bootstrap"

#: Kubernetes Secrets holding the users' access keys (names and keys as in the tutorial)
SNS_SECRET = "sns-credential"
S3_SECRET = "s3-credential"
SQS_SECRET = "sqs-credential"
SECRET_ID_KEY = "accessKey"
SECRET_KEY_KEY = "secretKey"

#: names of the Argo objects in manifests/aws
EVENTSOURCE_NAME = "aws-sns"
SQS_EVENTSOURCE_NAME = "aws-sqs"
#: the two deliveries (AWS_DELIVERY)
SQS = "sqs"
SNS_WEBHOOK = "sns-webhook"
EVENT_NAME = "s3-events"
#: port the EventSource's webhook listens on inside the cluster (the tutorial's)
WEBHOOK_PORT = "12000"
