"""The steps before any Kubernetes object: the tools, the kube-context guard, minikube and the workflow image.

The first three are the gates of every run (`stack.gate_steps`): a task makes no request before they hold.
"""

from __future__ import annotations

import json
from typing import Callable

from . import shell
from .engine import Check, Context, Outcome, State, Step, StepError
from .kube import kubeconfig_path
from .steps import kube


class ToolsStep(Step):
    """Required executables are present; records their versions."""

    removable = False
    gates_all = True

    def __init__(self, tools: Callable[[Context], list[str]]):
        self.name = "preflight/tools"
        self.title = "kubectl, helm (and minikube, docker) are installed"
        self._tools = tools

    VERSION_ARGS = {
        "kubectl": ("version", "--client", "-o", "json"),
        "helm": ("version", "--short"),
        "minikube": ("version", "--short"),
        "docker": ("version", "--format", "{{.Server.Version}}"),
    }

    def _survey(self, ctx: Context) -> tuple[list[str], list[str], list[str]]:
        """(versions found, missing tools, problems with tools that are there)."""
        versions, missing, broken = [], [], []
        for tool in self._tools(ctx):
            if shell.find(tool, ctx.settings) is None:
                missing.append(tool)
                continue
            ran = shell.run(tool, ctx.settings, *self.VERSION_ARGS[tool], check=False, timeout=30)
            text = ran.stdout.strip()
            if tool == "kubectl":
                try:
                    text = json.loads(text)["clientVersion"]["gitVersion"]
                except (ValueError, KeyError):
                    pass
            if tool == "docker" and not ran.ok:
                broken.append("docker is installed but its engine does not answer")
                continue
            versions.append(f"{tool} {text.splitlines()[0] if text else '?'}")
        return versions, missing, broken

    def check(self, ctx: Context) -> Check:
        from .toolinstall import PINS

        versions, missing, broken = self._survey(ctx)
        installable = [t for t in missing if t in shell.INSTALLABLE]
        auto = ctx.settings.tools_auto_install
        others = [t for t in missing if t not in installable or not auto]
        if others or broken:
            problems = ([f"missing executable(s): {', '.join(others)}"] if others else []) + broken
            hints = []
            if set(others) - {"docker"}:
                hints.append("run `invoke tools.install` for kubectl/helm/minikube (or set TOOLS_AUTO_INSTALL=true)")
            if "docker" in others or broken:
                hints.append("install/start Docker and make sure your user may use it, or set MINIKUBE_DRIVER")
            raise StepError("; ".join(problems), hint="; ".join(hints))
        if installable:
            return Check(State.MISSING, diff=[f"install {t} v{PINS[t].version} into {shell.tools_dir(ctx.settings)}"
                                              for t in installable], detail=", ".join(versions))
        return Check(State.PRESENT, detail=", ".join(versions))

    def apply(self, ctx: Context, check: Check) -> None:
        from .toolinstall import install

        _, missing, _ = self._survey(ctx)
        names = [t for t in missing if t in shell.INSTALLABLE]
        mirror = ctx.settings.values["TOOLS_MIRROR_URL"]
        with ctx.reporter.waiting(f"installing {', '.join(names)}"):
            results = install(names, shell.tools_dir(ctx.settings), base_urls={"*": mirror} if mirror else None,
                              reporter=lambda text: None)
        failed = [r for r in results if r.outcome == "failed"]
        if failed:
            raise StepError(f"could not install {', '.join(r.name for r in failed)}: {failed[0].detail}",
                            hint=f"without internet: put the binaries in {shell.tools_dir(ctx.settings)} or on PATH, "
                                 "or set TOOLS_MIRROR_URL to a mirror of their release URLs")


class KubeContextStep(Step):
    """The kube context is the configured one: the tool refuses to act on any other cluster."""

    removable = False
    gates_all = True

    def __init__(self):
        self.name = "preflight/kube-context"
        self.title = "kubectl's current context is KUBE_CONTEXT"

    def check(self, ctx: Context) -> Check:
        context = check_kube_context(ctx.settings)
        # asked once, here: behind a cluster that does not answer (or a kubeconfig the client cannot read)
        # every later step is then one line, not one failure each
        version = kube(ctx).version().get("gitVersion") or "?"
        return Check(State.PRESENT, detail=f"{context} (Kubernetes {version})")


def check_kube_context(settings) -> str:
    """KUBE_CONTEXT exists, and kubectl's current context is it (or unset): else refuse, before any request.

    The tool always addresses KUBE_CONTEXT explicitly; the guard is there so that the hints it prints
    (`kubectl describe …`) and the user's own kubectl do not land on another cluster.
    """
    import yaml

    wanted = settings.kube_context
    path = kubeconfig_path()
    try:
        with open(path, encoding="utf-8") as handle:
            kubeconfig = yaml.safe_load(handle) or {}
        if not isinstance(kubeconfig, dict):
            raise ValueError("not a mapping")
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise StepError(f"no usable kubeconfig at {path}: {exc}", hint="start the cluster, or set KUBECONFIG") from None
    names = [c.get("name") for c in kubeconfig.get("contexts") or [] if isinstance(c, dict)]
    if wanted not in names:
        raise StepError(f"kube context {wanted!r} does not exist (have: {', '.join(map(str, names)) or 'none'})",
                        hint="set KUBE_CONTEXT in .env")
    _refuse_other_current(wanted, kubeconfig)
    return wanted


def _refuse_other_current(wanted: str, kubeconfig: dict) -> None:
    # unset after `minikube start --keep-context` on a machine that had no context: nothing to confuse
    current = kubeconfig.get("current-context") or None
    if current not in (wanted, None):
        raise StepError(f"current kube context is {current!r}, but KUBE_CONTEXT is {wanted!r}: refusing to act",
                        hint=f"`kubectl config use-context {wanted}`, or set KUBE_CONTEXT={current}")


def check_current_context(settings) -> None:
    """Before KUBE_CONTEXT exists (minikube not started yet): refuse if kubectl points at another cluster."""
    import yaml

    try:
        with open(kubeconfig_path(), encoding="utf-8") as handle:
            kubeconfig = yaml.safe_load(handle) or {}
    except (OSError, yaml.YAMLError):
        return  # no kubeconfig yet: minikube writes one
    if isinstance(kubeconfig, dict):
        _refuse_other_current(settings.kube_context, kubeconfig)


# -- minikube -------------------------------------------------------------------------------------


class MinikubeStep(Step):
    """The minikube profile is running with at least the configured resources."""

    gates_all = True

    def __init__(self):
        self.name = "cluster/minikube"
        self.title = "minikube profile running"
        self.poll_interval = 3.0

    def skip_reason(self, ctx: Context) -> str | None:
        return None if ctx.settings.uses_minikube else "CLUSTER=existing: using KUBE_CONTEXT as is"

    def _status(self, ctx: Context) -> dict | None:
        ran = shell.run("minikube", ctx.settings, "status", "-p", ctx.settings.minikube_profile, "-o", "json",
                        check=False, timeout=60)
        try:
            data = json.loads(ran.stdout.strip().splitlines()[-1]) if ran.stdout.strip() else {}
        except ValueError:
            data = {}
        if isinstance(data, list):
            data = data[0] if data else {}
        if ran.exit_code == 85 or data.get("Host") in (None, "Nonexistent"):
            return None
        return data

    def _resources(self, ctx: Context) -> dict | None:
        ran = shell.run("minikube", ctx.settings, "profile", "list", "-o", "json", check=False, timeout=60)
        try:
            profiles = json.loads(ran.stdout or "{}").get("valid") or []
        except ValueError:
            return None
        for profile in profiles:
            if profile.get("Name") == ctx.settings.minikube_profile:
                return profile.get("Config") or {}
        return None

    def check(self, ctx: Context) -> Check:
        status = self._status(ctx)
        if status is None:
            return Check(State.MISSING, detail="profile does not exist")
        parts = {k: status.get(k) for k in ("Host", "Kubelet", "APIServer")}
        running = all(v == "Running" for v in parts.values())
        if not running:
            return Check(State.DRIFTED, diff=[f"{k}={v}" for k, v in parts.items() if v != "Running"],
                         detail="not running")
        config = self._resources(ctx) or {}
        low = []
        if config.get("CPUs") and int(config["CPUs"]) < ctx.settings.minikube_cpus:
            low.append(f"CPUs {config['CPUs']} < MINIKUBE_CPUS {ctx.settings.minikube_cpus}")
        if config.get("Memory") and int(config["Memory"]) < ctx.settings.minikube_memory_mb:
            low.append(f"memory {config['Memory']} MiB < MINIKUBE_MEMORY_MB {ctx.settings.minikube_memory_mb}")
        if low:
            raise StepError(f"profile {ctx.settings.minikube_profile!r} is too small: {'; '.join(low)}",
                            hint="minikube cannot resize a profile: `invoke down --purge --minikube` then `invoke up`, "
                                 "or lower the settings")
        return Check(State.PRESENT, detail="running")

    def apply(self, ctx: Context, check: Check) -> None:
        s = ctx.settings
        # --keep-context: the user's current context stays as it is; the tool addresses its own explicitly
        args = ["start", "-p", s.minikube_profile, "--keep-context", "--driver", s.minikube_driver,
                "--cpus", str(s.minikube_cpus), "--memory", str(s.minikube_memory_mb)]
        if s.minikube_kubernetes_version:
            args += ["--kubernetes-version", s.minikube_kubernetes_version]
        check_current_context(s)  # a fresh profile is started only when no other cluster is current
        with ctx.reporter.waiting(f"minikube start -p {s.minikube_profile}"):
            shell.run("minikube", s, *args, timeout=ctx.wait_timeout(self) + 600)

    def remove_plan(self, ctx: Context) -> Outcome:
        if not ctx.option("purge_minikube"):
            return Outcome.SKIPPED
        return Outcome.OK if self._status(ctx) is None else Outcome.WOULD_CHANGE

    def remove(self, ctx: Context) -> Outcome:
        if not ctx.option("purge_minikube"):
            return Outcome.SKIPPED
        if self._status(ctx) is None:
            return Outcome.OK
        shell.run("minikube", ctx.settings, "delete", "-p", ctx.settings.minikube_profile, timeout=600)
        return Outcome.CHANGED


class ImageBuildStep(Step):
    """The workflow image, built inside minikube from code/Dockerfile, tagged with its inputs' hash."""

    removable = False

    def __init__(self):
        self.name = "pipeline/image"
        self.title = "ETL image built in minikube (content-hash tag)"

    def skip_reason(self, ctx: Context) -> str | None:
        if ctx.settings.values["ETL_IMAGE"]:
            return f"using ETL_IMAGE={ctx.settings.values['ETL_IMAGE']}"
        if not ctx.settings.uses_minikube:
            return "CLUSTER=existing"
        return None

    def check(self, ctx: Context) -> Check:
        from .manifests import etl_image

        tag = etl_image(ctx.settings)
        ran = shell.run("minikube", ctx.settings, "image", "ls", "-p", ctx.settings.minikube_profile, check=False,
                        timeout=120)
        present = any(line.strip().endswith(tag) for line in ran.stdout.splitlines())
        return Check(State.PRESENT if present else State.MISSING, detail=tag)

    def apply(self, ctx: Context, check: Check) -> None:
        from .manifests import CODE, etl_image

        tag = etl_image(ctx.settings)
        with ctx.reporter.waiting(f"minikube image build {tag}"):
            shell.run("minikube", ctx.settings, "image", "build", "-t", tag, "-p", ctx.settings.minikube_profile,
                      str(CODE), timeout=1800)

