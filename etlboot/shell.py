"""The external executables (helm, minikube, kubectl, docker), found in TOOLS_DIR first, then PATH."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sh

from . import PROJECT_ROOT
from .engine import StepError
from .toolinstall import find_tool

INSTALLABLE = ("kubectl", "helm", "minikube")


def tools_dir(settings) -> Path:
    path = Path(settings.values["TOOLS_DIR"])
    return path if path.is_absolute() else PROJECT_ROOT / path


def find(name: str, settings) -> str | None:
    return find_tool(name, tools_dir(settings))


def require(name: str, settings) -> str:
    path = find(name, settings)
    if path is None:
        hint = "run `invoke tools.install`" if name in INSTALLABLE else "install Docker (https://docs.docker.com/engine/install/)"
        raise StepError(f"`{name}` not found in {tools_dir(settings)} or on PATH", hint=hint)
    return path


@dataclass
class Ran:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def run(name: str, settings, *args: str, check: bool = True, timeout: float | None = None) -> Ran:
    """Run a tool; with check=False a non-zero exit is returned, not raised."""
    command = sh.Command(require(name, settings))
    try:
        done = command(*args, _ok_code=list(range(256)) if not check else [0], _timeout=timeout,
                       _return_cmd=True, _in=None)
    except sh.TimeoutException:
        raise StepError(f"`{name} {' '.join(args[:2])}` did not finish within {timeout:.0f}s",
                        hint="the cluster may be slow or stuck; `invoke status` re-checks") from None
    except sh.ErrorReturnCode as exc:
        stderr = exc.stderr.decode("utf-8", "replace").strip()
        last = stderr.splitlines()[-1] if stderr else f"exit code {exc.exit_code}"
        raise StepError(f"`{name} {' '.join(args[:2])}` failed: {last}",
                        hint=f"run `{name} {' '.join(args)}` by hand to see everything") from None
    return Ran(done.exit_code, done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace"))
