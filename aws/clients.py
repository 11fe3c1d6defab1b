"""boto3 clients for one run: explicit region and credentials, standard retries, every call recorded.

- Region and profile come from the settings; `config.require_aws` refuses to run without them.
- `AWS_ENDPOINT_URL` (tests: a local moto server) points every client at one endpoint.
- Retries use botocore's "standard" mode (throttling and 5xx are retried with backoff) up to
  `AWS_MAX_ATTEMPTS` attempts (default 5); what still fails becomes one clear line (`aws_error`).
- Every API call is recorded (service, operation, whether it writes). During a dry run a write call is
  refused before it leaves the process: the plan is printed, nothing is changed.
- Error text never carries an access key id: `scrub` removes them from AWS messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from etlboot.engine import StepError

#: botocore operation names that only read; every other operation counts as a write
READ_PREFIXES = ("Get", "List", "Head", "Describe")
DEFAULT_MAX_ATTEMPTS = 5

#: called with (service, operation, writes) for every API call of every run (tests observe with it)
observers: list[Callable[[str, str, bool], None]] = []
#: called with each new boto3 client (tests register botocore event handlers with it)
client_hooks: list[Callable[[Any], None]] = []

_ACCESS_KEY_ID = re.compile(r"\b(AKIA|ASIA|AIDA|AROA)[A-Z0-9]{12,}\b")


def scrub(text: str) -> str:
    """Remove anything shaped like an AWS access key id from text that may be shown."""
    return _ACCESS_KEY_ID.sub(lambda m: m.group(1) + "…", text)


def is_write(operation: str) -> bool:
    return not operation.startswith(READ_PREFIXES)


@dataclass(frozen=True)
class Identity:
    account: str
    arn: str
    partition: str


@dataclass(frozen=True)
class Call:
    service: str
    operation: str
    writes: bool


class DryRunWrite(StepError):
    """A write call was attempted during a dry run (a bug: the plan must only read)."""


class AwsClients:
    """The boto3 clients of one run (cached per service) and the record of their calls."""

    def __init__(self, settings, *, dry_run: bool = False, session=None):
        import boto3
        from botocore.config import Config

        values = settings.values
        self.region = values["AWS_REGION"]
        self.endpoint_url = values.get("AWS_ENDPOINT_URL") or None
        attempts = int(values.get("AWS_MAX_ATTEMPTS") or DEFAULT_MAX_ATTEMPTS)
        self.max_attempts = max(1, attempts)
        self.dry_run = dry_run
        self.session = session or boto3.Session(botocore_session=_botocore_session(values.get("AWS_PROFILE")),
                                                region_name=self.region)
        _dedupe_search_paths()
        timeout = float(values.get("REQUEST_TIMEOUT_SECONDS") or 30)
        self.config = Config(retries={"mode": "standard", "total_max_attempts": self.max_attempts},
                             connect_timeout=min(timeout, 10), read_timeout=timeout,
                             user_agent_extra="argo-etl-bootstrap")
        self.calls: list[Call] = []
        self._clients: dict[str, Any] = {}
        self._identity: Identity | None = None

    # -- clients ------------------------------------------------------------------------------
    def client(self, service: str):
        if service not in self._clients:
            client = self.session.client(service, region_name=self.region, endpoint_url=self.endpoint_url,
                                         config=self.config)
            client.meta.events.register("before-call", self._before_call)
            for hook in client_hooks:
                hook(client)
            self._clients[service] = client
        return self._clients[service]

    @property
    def s3(self):
        return self.client("s3")

    @property
    def sns(self):
        return self.client("sns")

    @property
    def sqs(self):
        return self.client("sqs")

    @property
    def iam(self):
        return self.client("iam")

    def _before_call(self, model=None, **_: Any) -> None:
        service = model.service_model.service_name
        call = Call(service, model.name, is_write(model.name))
        self.calls.append(call)
        for observer in observers:
            observer(call.service, call.operation, call.writes)
        if call.writes and self.dry_run:
            raise DryRunWrite(f"dry run: refusing the write call {service}:{model.name}",
                              hint="this is a bug in the plan code; please report it")

    def writes(self) -> list[Call]:
        return [c for c in self.calls if c.writes]

    # -- who we are ---------------------------------------------------------------------------
    def identity(self) -> Identity:
        if self._identity is None:
            try:
                answer = self.client("sts").get_caller_identity()
            except Exception as exc:  # noqa: BLE001 - becomes one line below
                raise aws_error(exc, "find the AWS account of the configured credentials") from None
            arn = answer["Arn"]
            self._identity = Identity(answer["Account"], arn, arn.split(":")[1] or "aws")
        return self._identity

    def close(self) -> None:
        for client in self._clients.values():
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing never hides the outcome
                pass
        self._clients.clear()


_LOADER = None


def _botocore_session(profile: str | None):
    """A new botocore session (credentials are resolved afresh) sharing one data loader per process:
    the service models and endpoint data are parsed once, not once per run."""
    global _LOADER
    import botocore.loaders
    import botocore.session

    if _LOADER is None:
        _LOADER = botocore.loaders.create_loader()
    session = botocore.session.Session(profile=profile or None)
    session.register_component("data_loader", _LOADER)
    return session


def _dedupe_search_paths() -> None:
    # every boto3.Session appends its data folder to the loader's search path: keep one of each
    if _LOADER is not None:
        paths = _LOADER.search_paths
        unique = list(dict.fromkeys(paths))
        if len(unique) != len(paths):
            paths[:] = unique


# -- errors ---------------------------------------------------------------------------------------

THROTTLING = {"Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
              "TooManyRequestsException", "SlowDown", "RequestLimitExceeded", "PriorRequestNotComplete"}
UNAVAILABLE = {"ServiceUnavailable", "InternalError", "InternalFailure", "503", "500", "502", "504"}


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str((response.get("Error") or {}).get("Code") or "")


def aws_error(exc: BaseException, doing: str) -> StepError:
    """One clear line (what we were doing, what AWS said, how often we tried) and a hint."""
    import botocore.exceptions as bce

    if isinstance(exc, StepError):
        return exc
    if isinstance(exc, bce.ClientError):
        code = error_code(exc)
        error = exc.response.get("Error") or {}
        message = scrub(str(error.get("Message") or "")).strip()
        attempts = int((exc.response.get("ResponseMetadata") or {}).get("RetryAttempts") or 0) + 1
        status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        said = code + (f": {message}" if message and message != code else "")
        if code in THROTTLING or code in UNAVAILABLE or (status or 0) >= 500:
            return StepError(f"{doing}: AWS answered {said or status} (HTTP {status}) "
                             f"after {attempts} attempt{'s' if attempts != 1 else ''}",
                             hint="AWS is throttling or unavailable: wait a minute and run the command again "
                                  "(AWS_MAX_ATTEMPTS sets the retries)")
        hint = {
            "AccessDenied": "the configured credentials lack this permission",
            "AccessDeniedException": "the configured credentials lack this permission",
            "UnauthorizedOperation": "the configured credentials lack this permission",
            "AuthorizationError": "the configured credentials lack this permission",
            "InvalidClientTokenId": "the AWS credentials are not valid: check AWS_PROFILE / AWS_ACCESS_KEY_ID",
            "SignatureDoesNotMatch": "the AWS secret key does not match the key id: check the credentials",
            "ExpiredToken": "the AWS session expired: log in again (aws sso login / new session)",
        }.get(code, "check the AWS credentials, region and permissions; --debug shows the traceback")
        return StepError(f"{doing}: AWS {exc.operation_name} failed: {said}", hint=hint)
    if isinstance(exc, bce.NoCredentialsError):
        return StepError(f"{doing}: no AWS credentials found",
                         hint="set AWS_PROFILE, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment")
    if isinstance(exc, bce.ProfileNotFound):
        return StepError(f"{doing}: {scrub(str(exc))}", hint="check AWS_PROFILE against ~/.aws/config")
    if isinstance(exc, (bce.EndpointConnectionError, bce.ConnectTimeoutError, bce.ReadTimeoutError)):
        return StepError(f"{doing}: cannot reach AWS ({type(exc).__name__})",
                         hint="check the network, AWS_REGION and AWS_ENDPOINT_URL")
    if isinstance(exc, bce.BotoCoreError):
        return StepError(f"{doing}: {scrub(str(exc))}", hint="check AWS_REGION/AWS_PROFILE and the network")
    return StepError(f"{doing}: {type(exc).__name__}: {scrub(str(exc))}", hint="--debug shows the traceback")


def call(doing: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Run one AWS call; any failure becomes `aws_error(…, doing)`."""
    try:
        return fn(*args, **kwargs)
    except StepError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise aws_error(exc, doing) from None


def absent(doing: str, codes: set[str], fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Run a read call; return None when AWS answers with one of `codes` (the thing is not there)."""
    try:
        return fn(*args, **kwargs)
    except StepError:
        raise
    except Exception as exc:  # noqa: BLE001
        if error_code(exc) in codes:
            return None
        raise aws_error(exc, doing) from None
