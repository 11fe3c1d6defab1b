"""Settings: every knob comes from `.env` and the environment, is validated, and names itself in errors.

Precedence: a task's CLI flag > environment variable > `.env` > the default below.
Passwords have no default: they are generated on first use and written to `.env` (mode 0600).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from . import PROJECT_ROOT


class ConfigError(Exception):
    """A setting is missing or invalid. The message names the setting."""


DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
BUCKET = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?")  # characters, first and last; the other rules: _validate
IMAGE = re.compile(r"^([a-z0-9.-]+(:\d+)?/)?[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$")
QUANTITY = re.compile(r"(\d+(\.\d+)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|[kMGTPE]|[eE][+-]?\d+)?")
VERSION = re.compile(r"^v?\d+\.\d+\.\d+([-.+][0-9A-Za-z.-]+)?$")


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None
    help: str
    kind: str = "str"  # str | int | bool | choice | name | bucket | sqs_queue | iam_role_arn | image | version | url | duration | quantity | done_file | name_patterns
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    secret: bool = False
    generate: bool = False  # generated on first use and saved to .env
    optional: bool = False  # may be empty
    group: str = "cluster"


SETTINGS: tuple[Setting, ...] = (
    # -- where
    Setting("CLUSTER", "minikube", "minikube: the tool runs a local minikube profile; existing: use KUBE_CONTEXT as is (kind, k3d, EKS ...)", "choice", ("minikube", "existing")),
    Setting("KUBE_CONTEXT", "", "kube context to act on; empty = the minikube profile name. The tool refuses to act when kubectl's current context differs", optional=True),
    Setting("NAMESPACE", "argo-etl", "namespace for everything the tool makes", "name"),
    Setting("MINIKUBE_PROFILE", "argo-etl", "minikube profile name", "name"),
    Setting("MINIKUBE_DRIVER", "docker", "minikube driver", "choice", ("docker", "podman", "kvm2", "qemu", "hyperkit", "virtualbox", "none")),
    Setting("MINIKUBE_CPUS", "4", "CPUs for the minikube profile", "int", minimum=2, maximum=64),
    Setting("MINIKUBE_MEMORY_MB", "8192", "memory for the minikube profile, in MiB", "int", minimum=4096, maximum=262144),
    Setting("MINIKUBE_KUBERNETES_VERSION", "", "Kubernetes version for minikube (empty: minikube's default)", "version", optional=True),
    Setting("TOOLS_DIR", ".bin", "project-local directory for kubectl/helm/minikube installed by `invoke tools.install`; searched before PATH"),
    Setting("TOOLS_AUTO_INSTALL", "true", "`up` installs a missing kubectl/helm/minikube itself (pinned, checksum-verified, into TOOLS_DIR)", "bool"),
    Setting("TOOLS_MIRROR_URL", "", "origin that replaces the download host of the pinned tool URLs (a local mirror); the checksums still apply", "url", optional=True),
    # -- charts
    Setting("HELM_REPO_URL", "https://argoproj.github.io/argo-helm", "argo-helm chart repository (passed to helm as --repo; your helm repo list is not touched)", "url"),
    Setting("ARGO_EVENTS_RELEASE", "argo-events", "Helm release name for Argo Events", "name"),
    Setting("ARGO_EVENTS_CHART_VERSION", "2.4.22", "argo-helm argo-events chart version (app v1.9.10)", "version"),
    Setting("ARGO_WORKFLOWS_RELEASE", "argo-workflows", "Helm release name for Argo Workflows", "name"),
    Setting("ARGO_WORKFLOWS_CHART_VERSION", "1.0.18", "argo-helm argo-workflows chart version (app v4.0.6)", "version"),
    Setting("EVENTBUS_NATS_VERSION", "2.10.10", "JetStream version for the EventBus; must be listed in the argo-events controller config", "str"),
    Setting("EVENTBUS_REPLICAS", "1", "EventBus replicas: 1 or >= 3 (JetStream rule)", "int", minimum=1, maximum=9),
    # -- MinIO
    Setting("MINIO_IMAGE", "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z", "MinIO server image (Docker Hub minio/minio is gone; quay.io or a fork such as docker.io/pgsty/silo)", "image", group="minio"),
    Setting("MINIO_ROOT_USER", "etl-admin", "MinIO root user", "str", group="minio"),
    Setting("MINIO_ROOT_PASSWORD", None, "MinIO root password (generated on first run, >= 24 chars)", secret=True, generate=True, group="minio"),
    Setting("MINIO_STORAGE_SIZE", "5Gi", "size of MinIO's PersistentVolumeClaim (a Kubernetes quantity: 5Gi, 500Mi)", "quantity", group="minio"),
    Setting("ETL_BUCKET", "etlproj", "bucket the pipeline reads input/ from and writes output/ to", "bucket", group="minio"),
    Setting("ARTIFACT_BUCKET", "artifact", "bucket of the Argo Workflows artifact repository", "bucket", group="minio"),
    # -- pipeline
    Setting("ETL_IMAGE", "", "pre-built image for the workflows; empty = build code/Dockerfile inside minikube with a content-hash tag (required when CLUSTER=existing)", "image", optional=True, group="pipeline"),
    Setting("AGG_SETTLE_SECONDS", "20", "seconds the aggregation waits for more files of the same date", "int", minimum=0, maximum=3600, group="pipeline"),
    Setting("FTP_ENABLED", "true", "install the FTP event source (vsftpd + gRPC event server) with `up`", "bool", group="ftp"),
    Setting("FTP_IMAGE", "docker.io/garethflowers/ftp-server:0.9.2", "vsftpd server image (vsftpd 3.0.5 on Alpine; reads FTP_USER/FTP_PASS)", "image", group="ftp"),
    Setting("FTP_USER", "etl", "FTP user name", "str", group="ftp"),
    Setting("FTP_PASSWORD", None, "FTP password (generated on first run)", secret=True, generate=True, group="ftp"),
    Setting("FTP_POLL_SECONDS", "10", "FTP poll interval of the event server", "int", minimum=1, maximum=3600, group="ftp"),
    Setting("FTP_MIN_AGE_SECONDS", "", "a file is reported only once it is this old by the FTP server's clock; empty: max(30, 3 x FTP_POLL_SECONDS), or 0 when FTP_DONE_FILE is set (docs/ftp.md)", "int", minimum=0, maximum=86400, optional=True, group="ftp"),
    Setting("FTP_DONE_FILE", "", "done-marker name next to each file, made from {name} or {stem} (e.g. {name}.done): a file is reported only once its marker exists; empty: no marker", "done_file", optional=True, group="ftp"),
    Setting("FTP_IGNORE", "*.part,*.tmp,.*", "comma-separated file-name patterns never reported (temporary names an uploader renames when complete); empty: report every name", "name_patterns", optional=True, group="ftp"),
    Setting("FTP_CONFIRM_SECONDS", "30", "an event stays pending, and is sent again to the next stream, until its stream has stayed up this long after it (at-least-once delivery)", "int", minimum=1, maximum=3600, group="ftp"),
    # -- time
    Setting("WAIT_TIMEOUT_SECONDS", "300", "upper bound for every readiness wait", "int", minimum=5, maximum=7200),
    Setting("HELM_TIMEOUT", "10m", "helm --timeout for installs/upgrades", "duration"),
    Setting("REQUEST_TIMEOUT_SECONDS", "30", "timeout of one Kubernetes API request", "int", minimum=1, maximum=600),
    # -- AWS
    Setting("AWS_REGION", "", "AWS region (required for aws.* tasks)", optional=True, group="aws"),
    Setting("AWS_PROFILE", "", "AWS profile; or give credentials through the standard AWS_* variables", optional=True, group="aws"),
    Setting("AWS_ENDPOINT_URL", "", "custom AWS endpoint (tests point this at a local moto server)", "url", optional=True, group="aws"),
    Setting("AWS_MAX_ATTEMPTS", "5", "attempts per AWS call (standard retry mode: throttling and 5xx are retried with backoff)", "int", minimum=1, maximum=20, group="aws"),
    Setting("AWS_BUCKET", "", "S3 bucket for the AWS variant of the pipeline (globally unique)", "bucket", optional=True, group="aws"),
    Setting("AWS_DELIVERY", "sqs", "how S3 events reach the cluster: sqs (S3 -> SQS queue, the SQS EventSource polls it: works behind NAT, no public port) or sns-webhook (S3 -> SNS -> a public webhook, as in the tutorial)", "choice", ("sqs", "sns-webhook"), group="aws"),
    Setting("AWS_QUEUE", "argo-etl-s3-events", "SQS queue name (AWS_DELIVERY=sqs); its dead-letter queue is <name>-dlq", "sqs_queue", group="aws"),
    Setting("AWS_QUEUE_MAX_RECEIVES", "5", "receives of one message before SQS moves it to the dead-letter queue (AWS_DELIVERY=sqs)", "int", minimum=1, maximum=1000, group="aws"),
    Setting("AWS_SQS_USER", "argo-etl-sqs", "IAM user for the Argo Events SQS EventSource (AWS_DELIVERY=sqs)", group="aws"),
    Setting("AWS_EVENTSOURCE_ROLE_ARN", "", "EKS: IAM role the EventSource assumes (its roleARN, from the pod's own AWS identity: IRSA, Pod Identity or the node's role) instead of an IAM user's access key; empty: an IAM user and key", "iam_role_arn", optional=True, group="aws"),
    Setting("AWS_ETL_ROLE_ARN", "", "EKS: IAM role of the S3 ETL job, through IRSA (its ServiceAccount s3-etl is annotated with it; for Pod Identity associate the role with that ServiceAccount) instead of an IAM user's access key; empty: an IAM user and key", "iam_role_arn", optional=True, group="aws"),
    Setting("AWS_TOPIC", "argo-etl-s3-events", "SNS topic name (AWS_DELIVERY=sns-webhook)", group="aws"),
    Setting("AWS_SNS_USER", "argo-etl-sns", "IAM user for the Argo Events SNS EventSource (AWS_DELIVERY=sns-webhook)", group="aws"),
    Setting("AWS_S3_USER", "argo-etl-s3", "IAM user for the S3 ETL job", group="aws"),
    Setting("SNS_WEBHOOK_URL", "", "public base URL at which SNS reaches the SNS EventSource (https://host:port; AWS_DELIVERY=sns-webhook only); SNS cannot call a private address", "url", optional=True, group="aws"),
    Setting("SNS_WEBHOOK_PATH", None, "unguessable path of the SNS webhook (generated on first run)", secret=True, generate=True, group="aws"),
)

BY_NAME = {s.name: s for s in SETTINGS}
#: what people put in .env that the tools read from the environment themselves
FROM_THE_ENVIRONMENT = {
    "KUBECONFIG": "kubectl, helm and the tool read it from the environment: `export KUBECONFIG=…` "
                  "(the context is KUBE_CONTEXT)",
}
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}


def parse_env_file(path: Path) -> dict[str, str]:
    """Parse KEY=VALUE lines; `#` comments, optional `export`, single or double quotes."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].strip()
        if "=" not in line:
            raise ConfigError(f"{path.name} line {number}: expected KEY=VALUE")
        key, value = line.split("=", 1)
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def _validate(setting: Setting, value: str) -> str:
    name = setting.name
    if value == "":
        if setting.optional:
            return value
        raise ConfigError(f"{name} must not be empty ({setting.help})")
    kind = setting.kind
    if kind == "int":
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{name}={value!r} is not a whole number") from None
        if setting.minimum is not None and number < setting.minimum:
            raise ConfigError(f"{name}={number} is below the minimum {setting.minimum}")
        if setting.maximum is not None and number > setting.maximum:
            raise ConfigError(f"{name}={number} is above the maximum {setting.maximum}")
    elif kind == "bool":
        if value.lower() not in TRUE | FALSE:
            raise ConfigError(f"{name}={value!r} is not a boolean (true/false)")
    elif kind == "choice":
        if value not in setting.choices:
            raise ConfigError(f"{name}={value!r} is not one of: {', '.join(setting.choices)}")
    elif kind == "name":
        if not DNS1123.match(value) or len(value) > 53:
            raise ConfigError(f"{name}={value!r} is not a valid Kubernetes name (lowercase letters, digits, '-'; at most 53 chars)")
    elif kind == "bucket":
        # S3's naming rules for general purpose buckets (User Guide, "General purpose bucket naming rules"),
        # checked here so a name S3 would refuse never gets as far as a call
        reserved_prefixes = ("xn--", "sthree-", "amzn-s3-demo-")  # sthree- also covers sthree-configurator
        reserved_suffixes = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
        why = ""
        if not 3 <= len(value) <= 63:
            why = f"it has {len(value)} characters; 3 to 63 are allowed"
        elif not BUCKET.fullmatch(value):  # fullmatch: `$` alone lets a trailing newline through
            why = "only lowercase letters, digits, '.' and '-' are allowed, and it must begin and end with a letter or digit"
        elif ".." in value:
            why = "it has two adjacent periods"
        elif ".-" in value or "-." in value:
            why = "it has a '-' next to a '.' (MinIO, whose buckets are named by the same kind of setting, refuses that)"
        elif re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", value):
            why = "it is formatted as an IP address"
        elif value.startswith(reserved_prefixes):
            why = f"the prefix {next(p for p in reserved_prefixes if value.startswith(p))!r} is reserved by S3"
        elif value.endswith(reserved_suffixes):
            why = f"the suffix {next(s for s in reserved_suffixes if value.endswith(s))!r} is reserved by S3"
        if why:
            raise ConfigError(f"{name}={value!r} is not a valid bucket name: {why}")
    elif kind == "sqs_queue":
        # SQS: up to 80 letters, digits, '-' and '_'; the dead-letter queue adds "-dlq", so 76 here
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,76}", value):
            raise ConfigError(f"{name}={value!r} is not a valid SQS queue name (letters, digits, '-' and '_', "
                              "at most 76 characters: the dead-letter queue's name adds -dlq)")
    elif kind == "iam_role_arn":
        if not re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}", value):
            raise ConfigError(f"{name}={value!r} is not an IAM role ARN like arn:aws:iam::123456789012:role/argo-etl")
    elif kind == "image":
        if not IMAGE.match(value):
            raise ConfigError(f"{name}={value!r} is not a valid image reference")
    elif kind == "version":
        if not VERSION.match(value):
            raise ConfigError(f"{name}={value!r} is not a version like 1.2.3")
    elif kind == "url":
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"{name}={value!r} is not an http(s) URL")
        # a base URL: the parts joined to it start with `/`. Argo Events v1.9.10 joins the SNS webhook's url
        # and endpoint without trimming, so `https://host/` would subscribe `https://host//<path>`
        value = value.rstrip("/")
    elif kind == "quantity":
        if not QUANTITY.fullmatch(value):
            raise ConfigError(f"{name}={value!r} is not a size like 5Gi or 500Mi (a Kubernetes quantity)")
    elif kind == "done_file":
        # the event server's rule (code/ftp_event_server/ftp_config.py), checked here so a bad value fails
        # `up` with its name instead of ending the FTP stream inside the cluster
        if "/" in value or not re.search(r"\{(name|stem)\}", value) or re.search(r"\{(?!name\}|stem\})", value) \
                or value in ("{name}", "{stem}"):
            raise ConfigError(f"{name}={value!r} is not a marker name like {{name}}.done or {{stem}}.ok "
                              "(one file name, made from {name} or {stem}, other than the file itself)")
    elif kind == "name_patterns":
        patterns = [p.strip() for p in value.split(",")]
        if any(not p or "/" in p for p in patterns):
            raise ConfigError(f"{name}={value!r} is not a comma-separated list of file-name patterns "
                              "(shell wildcards such as *.part, no '/', no empty entries)")
    elif kind == "duration":
        if not re.match(r"^(\d+h)?(\d+m)?(\d+s)?$", value) or value == "":
            raise ConfigError(f"{name}={value!r} is not a duration like 10m or 90s")
    if setting.secret and setting.generate and len(value) < 24:
        raise ConfigError(f"{name} is shorter than 24 characters; delete it from .env to have a strong one generated")
    return value


@dataclass
class Settings:
    values: dict[str, str]
    env_file: Path
    generated: list[str] = field(default_factory=list)
    saved: list[str] = field(default_factory=list)

    def __getattr__(self, item: str):
        values = self.__dict__.get("values", {})
        key = item.upper()
        if key not in values:
            raise AttributeError(item)
        setting = BY_NAME[key]
        raw = values[key]
        if setting.kind == "int":
            return int(raw)
        if setting.kind == "bool":
            return raw.lower() in TRUE
        return raw

    def __repr__(self) -> str:  # never show secret values
        shown = {k: ("***" if BY_NAME[k].secret else v) for k, v in self.values.items()}
        return f"Settings({shown})"

    @property
    def kube_context(self) -> str:
        return self.values["KUBE_CONTEXT"] or self.values["MINIKUBE_PROFILE"]

    @property
    def uses_minikube(self) -> bool:
        return self.values["CLUSTER"] == "minikube"

    def secret_values(self) -> list[str]:
        return [v for k, v in self.values.items() if BY_NAME[k].secret and v]

    def with_overrides(self, **overrides: str) -> "Settings":
        values = dict(self.values)
        for key, value in overrides.items():
            setting = BY_NAME[key.upper()]
            values[setting.name] = _validate(setting, str(value))
        return Settings(values, self.env_file, list(self.generated), self.saved)


def _append_generated(env_file: Path, generated: dict[str, str]) -> None:
    existed = env_file.exists()
    fd = os.open(env_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        if not existed:
            handle.write("# Local settings for argo-etl-bootstrap (git-ignored). See .env.example for every setting.\n")
        for key, value in generated.items():
            handle.write(f"# generated on first run\n{key}={value}\n")
    os.chmod(env_file, 0o600)


def load(env_file: Path | None = None, environ: dict[str, str] | None = None, generate: bool = True,
         save: bool = True) -> Settings:
    """Load, validate and (first run) generate settings. Raises ConfigError naming the setting.
    `save=False`: the generated values are only in memory until `save_generated` (before the first write)."""
    env_file = Path(env_file or os.environ.get("ETLBOOT_ENV_FILE") or PROJECT_ROOT / ".env")
    environ = dict(os.environ if environ is None else environ)
    file_values = parse_env_file(env_file)
    unknown = [k for k in file_values if k not in BY_NAME]
    if unknown:
        key = unknown[0]
        if key in FROM_THE_ENVIRONMENT:
            raise ConfigError(f"{env_file.name}: {key} is not a setting of this tool: {FROM_THE_ENVIRONMENT[key]}")
        close = difflib.get_close_matches(key, BY_NAME, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"{env_file.name}: unknown setting {key}{hint}")
    if env_file.exists() and stat.S_IMODE(env_file.stat().st_mode) & 0o077 and any(
        BY_NAME[k].secret for k in file_values
    ):
        os.chmod(env_file, 0o600)

    values: dict[str, str] = {}
    to_generate: dict[str, str] = {}
    for setting in SETTINGS:
        if setting.name in environ:
            raw = environ[setting.name]
        elif setting.name in file_values:
            raw = file_values[setting.name]
        elif setting.generate:
            if not generate:
                raw = ""
            else:
                raw = secrets.token_urlsafe(24)  # 32 characters
                to_generate[setting.name] = raw
        else:
            raw = setting.default or ""
        if setting.generate and raw == "" and not generate:
            values[setting.name] = raw
            continue
        values[setting.name] = _validate(setting, raw.strip())

    settings = Settings(values, env_file, list(to_generate))
    _check_combinations(settings)
    if save:
        save_generated(settings)
    return settings


def save_generated(settings: Settings) -> list[str]:
    """Append the values `load` generated to .env, once; the names written (none on a second call)."""
    unsaved = [name for name in settings.generated if name not in settings.saved]
    if unsaved:
        _append_generated(settings.env_file, {name: settings.values[name] for name in unsaved})
        settings.saved.extend(unsaved)
    return unsaved


def _check_combinations(settings: Settings) -> None:
    v = settings.values
    replicas = int(v["EVENTBUS_REPLICAS"])
    if replicas == 2:
        raise ConfigError("EVENTBUS_REPLICAS=2 is not allowed: a JetStream EventBus needs 1 or >= 3 replicas")
    if v["CLUSTER"] == "existing":
        if not v["KUBE_CONTEXT"]:
            raise ConfigError("KUBE_CONTEXT must be set when CLUSTER=existing (the tool never guesses a cluster)")
        if not v["ETL_IMAGE"]:
            raise ConfigError("ETL_IMAGE must be set when CLUSTER=existing (no minikube to build the image in)")


def aws_problems(settings: Settings) -> list[tuple[str, str]]:
    """(problem, what to do) for each of the settings every aws task needs that is missing: an explicit
    region, a credentials source and the bucket."""
    problems = []
    if not settings.values["AWS_REGION"]:
        problems.append(("AWS_REGION is not set: the aws tasks never guess a region", "set AWS_REGION, e.g. eu-west-1"))
    has_keys = os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not settings.values["AWS_PROFILE"] and not has_keys:
        problems.append(("AWS_PROFILE is not set and no AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment",
                         "set AWS_PROFILE, or export the two keys"))
    if not settings.values["AWS_BUCKET"]:
        problems.append(("AWS_BUCKET is not set (S3 bucket names are global: pick your own)", "set AWS_BUCKET"))
    return problems


def require_aws(settings: Settings) -> None:
    """AWS tasks refuse to run without an explicit region, credentials source and bucket (the first missing)."""
    problems = aws_problems(settings)
    if problems:
        raise ConfigError(problems[0][0])


def require_public_webhook(settings: Settings) -> str:
    """SNS must be able to reach the webhook: refuse empty, loopback, private or link-local hosts."""
    url = settings.values["SNS_WEBHOOK_URL"]
    if not url:
        raise ConfigError("SNS_WEBHOOK_URL is empty: SNS needs a public http(s) address to deliver to")
    host = (urlparse(url).hostname or "").lower()
    private = (host == "localhost" or "." not in host
               or host.endswith((".local", ".localhost", ".internal", ".svc", ".cluster.local", ".lan", ".home.arpa")))
    try:
        private = private or not ipaddress.ip_address(host).is_global
    except ValueError:
        pass
    if private:
        raise ConfigError(f"SNS_WEBHOOK_URL host {host!r} is not public: SNS delivers over the internet and cannot reach it")
    return url


GROUP_TITLES = {
    "cluster": "Cluster, charts and timeouts",
    "minio": "MinIO",
    "pipeline": "The ETL pipeline",
    "ftp": "The FTP event source",
    "aws": "AWS (invoke aws.*)",
}


def example_env() -> str:
    """The text of .env.example: every setting, its help and its default (generated ones left empty)."""
    lines = ["# argo-etl-bootstrap settings. Copy to .env (git-ignored) and change what you need.",
             "# Precedence: task flag > environment variable > .env > the default shown here.",
             "# Secrets have no default: the tool generates them on first run and appends them to .env (mode 0600).",
             ""]
    for group, title in GROUP_TITLES.items():
        lines.append(f"# --- {title}")
        for setting in SETTINGS:
            if setting.group != group:
                continue
            lines.append(f"# {setting.help}")
            value = "" if setting.default is None else setting.default
            prefix = "# " if setting.generate else ""
            lines.append(f"{prefix}{setting.name}={value}")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m etlboot.config > .env.example
    print(example_env(), end="")
