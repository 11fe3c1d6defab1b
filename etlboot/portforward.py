"""`kubectl port-forward` opened and closed by the tool, on a free local port."""

from __future__ import annotations

import re
import selectors
import subprocess
import time

from .engine import StepError
from . import children, shell

FORWARDING = re.compile(r"Forwarding from (?:127\.0\.0\.1|\[::1\]|localhost):(\d+) ->")


class PortForward:
    def __init__(self, settings, target: str, remote_port: int, local_port: int = 0, address: str = "127.0.0.1",
                 timeout: float = 20.0):
        self.settings = settings
        self.target = target
        self.remote_port = remote_port
        self.local_port = local_port
        self.address = address
        self.timeout = timeout
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "PortForward":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.local_port}"

    def start(self) -> "PortForward":
        from .cluster_steps import check_kube_context

        check_kube_context(self.settings)
        kubectl = shell.require("kubectl", self.settings)
        local = str(self.local_port) if self.local_port else ""
        argv = [kubectl, "--context", self.settings.kube_context, "-n", self.settings.namespace, "port-forward",
                "--address", self.address, self.target, f"{local}:{self.remote_port}"]
        self.process = children.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.timeout
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        seen = []
        while time.monotonic() < deadline:
            if self.process.poll() is not None and not selector.select(timeout=0):
                break
            if not selector.select(timeout=0.2):
                continue
            line = self.process.stdout.readline().decode("utf-8", "replace")
            if not line:
                if self.process.poll() is not None:
                    break
                continue
            seen.append(line.strip())
            match = FORWARDING.search(line)
            if match:
                self.local_port = int(match.group(1))
                return self
        self.stop()
        last = seen[-1] if seen else "no output"
        raise StepError(f"port-forward to {self.target}:{self.remote_port} did not open: {last}",
                        hint=f"is {self.target} running? `kubectl -n {self.settings.namespace} get pods`")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process and self.process.stdout:
            self.process.stdout.close()
        self.process = None

    def wait(self) -> int:
        """Block until the forward ends (for `invoke ui`)."""
        assert self.process is not None
        return self.process.wait()
