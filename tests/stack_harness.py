"""A whole fake world for `up`/`status`/`down`: the Kubernetes API emulator, the helm/minikube/kubectl/docker
stand-ins on PATH, and moto's S3 server standing in for MinIO behind the kubectl port-forward."""

from __future__ import annotations

import io
import json
import os
import sys
import threading
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from invoke import Context as InvokeContext
from invoke import Exit

from kube_emulator import KubeEmulator

ROOT = Path(__file__).resolve().parent.parent
STANDINS = ROOT / "tests" / "standins"


def standins_bin(folder: Path) -> Path:
    """The stand-ins, with this interpreter in their #! line: `env python3` may be a slow shim."""
    folder.mkdir(parents=True, exist_ok=True)
    for source in STANDINS.iterdir():
        if source.is_file():
            lines = source.read_text().splitlines(keepends=True)
            target = folder / source.name
            target.write_text(f"#!{sys.executable}\n" + "".join(lines[1:]))
            target.chmod(0o755)
    return folder


def _conditions(obj: dict, *types: str) -> dict:
    obj.setdefault("status", {})["conditions"] = [{"type": t, "status": "True"} for t in types]
    return obj


class World:
    def __init__(self, tmp_path: Path, monkeypatch, profile: str = "argo-etl"):
        from moto.server import ThreadedMotoServer

        self.tmp = tmp_path
        self.emu = KubeEmulator().start()
        if hasattr(self.emu, "tokens"):  # the emulator authenticates: accept the minikube stand-in's kubeconfig user
            self.emu.tokens.add("standin-token")
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
        self.moto.start()
        host, port = self.moto.get_host_and_port()
        self.kubeconfig = tmp_path / "kubeconfig"
        self.kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
        self.state = tmp_path / "standins"
        self.env_file = tmp_path / ".env"
        self.bin = standins_bin(tmp_path / "bin")
        env = {
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            "STANDIN_STATE_DIR": str(self.state),
            "STANDIN_KUBE_URL": self.emu.url,
            "STANDIN_FORWARD_MINIO": f"{host}:{port}",
            "KUBECONFIG": str(self.kubeconfig),
            "ETLBOOT_ENV_FILE": str(self.env_file),
            "TOOLS_DIR": str(tmp_path / "no-bin"),
            "MINIKUBE_PROFILE": profile,
            "WAIT_TIMEOUT_SECONDS": "20",
            "REQUEST_TIMEOUT_SECONDS": "5",
            "FTP_ENABLED": "false",
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        # the Argo Events controller marks what it reconciled (condition names as in its API types)
        self.emu.on_write("EventBus", self._eventbus_controller)
        self.emu.on_write("EventSource", self._eventsource_controller)
        #: what a MinIO EventSource pod logs: "listening" or "stopped" (the silent failure)
        self.listener = "listening"
        # a Deployment controller's one job here: an EventSource whose pod was deleted gets a new one
        self._stop = threading.Event()
        self._controller = threading.Thread(target=self._recreate_pods, daemon=True)
        self._controller.start()
        self.emu.on_write("Sensor", lambda obj: _conditions(obj, "DependenciesProvided", "TriggersProvided", "Deployed"))
        # kubernetes' kubeconfig loader caches nothing between calls; make sure no in-cluster config is used
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    def _eventbus_controller(self, obj: dict) -> dict:
        """The JetStream StatefulSet's pods (label eventbus-name, as the controller's installer sets it), ready."""
        meta = obj["metadata"]
        for i in range(int((obj.get("spec") or {}).get("jetstream", {}).get("replicas") or 1)):
            self.emu.put_object({"apiVersion": "v1", "kind": "Pod",
                                 "metadata": {"name": f"eventbus-{meta['name']}-js-{i}", "namespace": meta["namespace"],
                                              "labels": {"eventbus-name": meta["name"], "controller": "eventbus-controller"}},
                                 "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})
        return _conditions(obj, "Configured", "Deployed")

    def _eventsource_controller(self, obj: dict) -> dict:
        """Deploy the EventSource's pod (label eventsource-name) with the log its listener would write."""
        meta = obj["metadata"]
        pod = f"{meta['name']}-eventsource-pod"
        self.emu.put_object({"apiVersion": "v1", "kind": "Pod",
                             "metadata": {"name": pod, "namespace": meta["namespace"],
                                          "labels": {"eventsource-name": meta["name"]}},
                             "status": {"phase": "Running"}})
        self.set_listener(meta["namespace"], meta["name"], self.listener)
        return _conditions(obj, "SourcesProvided", "Deployed")

    def set_listener(self, namespace: str, eventsource: str, state: str) -> None:
        lines = ['{"level":"info","msg":"starting minio event source..."}',
                 '{"level":"info","msg":"started listening to bucket notifications..."}']
        if state == "stopped":
            lines += ['{"level":"error","msg":"invalid notification","error":"The specified bucket does not exist"}',
                      '{"level":"info","msg":"event source is stopped"}']
        self.emu.set_pod_log(namespace, f"{eventsource}-eventsource-pod", "\n".join(lines) + "\n")

    def _recreate_pods(self) -> None:
        while not self._stop.wait(0.2):
            try:
                sources = self.emu.objects("EventSource")
            except KeyError:  # the CRD is not installed (yet)
                continue
            for source in sources:
                meta = source["metadata"]
                if self.emu.get("Pod", f"{meta['name']}-eventsource-pod", meta["namespace"]) is None:
                    self._eventsource_controller(source)

    def close(self):
        self._stop.set()
        self._controller.join(2)
        self.emu.stop()
        self.moto.stop()

    # -- running tasks in-process, capturing everything they print --------------------------------
    def run(self, task: str, **kwargs) -> tuple[int, str]:
        from etlboot.tasks import core

        out = io.StringIO()
        code = 0
        with redirect_stdout(out), redirect_stderr(out):
            try:
                getattr(core, task)(InvokeContext(), **kwargs)
            except Exit as exc:
                code = exc.code
                if exc.message:
                    out.write(str(exc.message))
        return code, out.getvalue()

    # -- what happened ------------------------------------------------------------------------------
    def calls(self, tool: str | None = None) -> list[list[str]]:
        path = self.state / "calls.jsonl"
        if not path.exists():
            return []
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [r["argv"] for r in rows if tool is None or r["tool"] == tool]

    def reset_calls(self):
        path = self.state / "calls.jsonl"
        if path.exists():
            path.unlink()
        self.emu.clear_log()

    READ_ONLY = {
        "helm": {"status", "version", "list", "get"},
        "minikube": {"status", "version", "profile", "ls"},
        "kubectl": {"version", "port-forward"},
        "docker": {"version", "info"},
    }

    def mutating_calls(self) -> list[list[str]]:
        """Every stand-in invocation that is not one of the read-only subcommands."""
        return [[tool, *argv] for tool, words in self.READ_ONLY.items() for argv in self.calls(tool)
                if not words & set(argv)]

    def settings_secrets(self) -> list[str]:
        from etlboot import config

        return config.load(self.env_file, environ=dict(os.environ)).secret_values()
