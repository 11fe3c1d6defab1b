"""argo-etl-bootstrap: stand up, prove and tear down an event-driven ETL stack on Kubernetes."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGER = "argo-etl-bootstrap"
#: where an input lands: `demo.upload --target`, `trace --target`
TARGETS = ("minio", "aws", "ftp")
