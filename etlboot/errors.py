"""Turn any exception a step may raise into one clear line and a hint."""

from __future__ import annotations

import json
import socket


def explain(exc: BaseException) -> tuple[str, str]:
    from .config import ConfigError
    from .engine import StepError

    if isinstance(exc, StepError):
        return str(exc), exc.hint
    if isinstance(exc, ConfigError):
        return str(exc), "fix the setting in .env (see .env.example)"
    try:
        from kubernetes.client.exceptions import ApiException
    except ImportError:  # pragma: no cover
        ApiException = ()  # type: ignore
    if ApiException and isinstance(exc, ApiException):
        reason, message = exc.reason or "", ""
        try:
            body = json.loads(exc.body or "{}")
            reason = body.get("reason") or reason
            message = body.get("message") or ""
        except (ValueError, TypeError):
            message = (exc.body or "")[:200] if isinstance(exc.body, str) else ""
        hint = {
            401: "the kube credentials were refused: check KUBE_CONTEXT",
            403: "the kube user lacks permission for this object",
            409: "someone else changed the object: run the command again",
        }.get(exc.status or 0, "run `invoke status`, then retry; --debug shows the traceback")
        return f"Kubernetes API answered {exc.status} {reason}: {message}".rstrip(": "), hint
    try:
        from kubernetes.config.config_exception import ConfigException
    except ImportError:  # pragma: no cover
        ConfigException = ()  # type: ignore
    if ConfigException and isinstance(exc, ConfigException):
        return (f"the kubeconfig cannot be used: {exc}",
                "check KUBECONFIG and KUBE_CONTEXT (`kubectl config get-contexts` lists the contexts)")
    try:
        import urllib3.exceptions as u3
        network = (u3.HTTPError, socket.timeout, ConnectionError, TimeoutError)
    except ImportError:  # pragma: no cover
        network = (socket.timeout, ConnectionError, TimeoutError)
    if isinstance(exc, network):
        kind = "timed out" if "timeout" in type(exc).__name__.lower() or "timed out" in str(exc).lower() else "failed"
        pool = getattr(exc, "pool", None)
        where = f"{pool.scheme}://{pool.host}:{pool.port}" if pool is not None else "the Kubernetes API"
        return (f"request to {where} {kind}: {_root_cause(exc)}",
                "is the cluster up? `invoke status` re-checks; REQUEST_TIMEOUT_SECONDS sets the limit")
    try:
        import sh
        if isinstance(exc, sh.ErrorReturnCode):
            command = " ".join(str(part) for part in exc.full_cmd.split()[:3]) if hasattr(exc, "full_cmd") else "command"
            stderr = exc.stderr.decode("utf-8", "replace").strip().splitlines() if exc.stderr else []
            last = stderr[-1] if stderr else f"exit code {exc.exit_code}"
            return f"{command} failed: {last}", "run the command by hand to see its full output"
    except ImportError:  # pragma: no cover
        pass
    try:
        import botocore.exceptions as bce
        if isinstance(exc, bce.ClientError):
            error = exc.response.get("Error", {})
            return (f"AWS {exc.operation_name} failed: {error.get('Code')}: {error.get('Message')}",
                    "check the AWS credentials, region and permissions")
        if isinstance(exc, bce.BotoCoreError):
            return f"AWS call failed: {exc}", "check AWS_REGION/AWS_PROFILE and the network"
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, FileNotFoundError) and exc.filename and "/" not in str(exc.filename):
        return f"not found: {exc.filename}", "run `invoke tools.install` for kubectl/helm/minikube"
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}", "check the path"
    return f"{type(exc).__name__}: {exc}", "--debug shows the traceback"


def _root_cause(exc: BaseException) -> str:
    """What finally went wrong under a client's wrappers: `Connection refused`, not MaxRetryError(...)."""
    seen = exc
    while True:
        inner = getattr(seen, "reason", None) or seen.__cause__ or seen.__context__
        if not isinstance(inner, BaseException) or inner is seen:
            break
        seen = inner
    if isinstance(seen, OSError) and seen.strerror:
        return seen.strerror
    return str(seen).rsplit(": ", 1)[-1] or type(exc).__name__
