"""Test-only stand-ins shared by the examples tests: Argo's CRDs for the emulator, and a stand-in for Argo's
workflow controller that plays recorded status updates through the emulator's HTTP API."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Callable

from kube_emulator import KubeEmulator

NAMESPACE = "argo-etl"
CONTEXT = "emu-examples"


def crd(plural: str, kind: str, group: str = "argoproj.io") -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
                 # Argo's Workflow CRD has no status subresource: the controller writes the whole object
                 "versions": [{"name": "v1alpha1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": {"type": "object",
                                                              "x-kubernetes-preserve-unknown-fields": True}}}]},
    }


class ArgoStandIn:
    """Plays a recording for each Workflow created in the emulator, as Argo's controller would update it.

    ``script(index, workflow) -> Recording`` builds the recording from the created object (its generated
    name and its spec as submitted); ``index`` counts the created Workflows from 0.
    """

    def __init__(self, emulator: KubeEmulator, script: Callable, step_seconds: float = 0.05):
        self.emulator = emulator
        self.script = script
        self.step_seconds = step_seconds
        self.seen: list[str] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watcher = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> "ArgoStandIn":
        self._watcher.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._watcher.join(5)
        for thread in self._threads:
            thread.join(5)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for obj in self.emulator.objects("Workflow", NAMESPACE):
                name = obj["metadata"]["name"]
                if name not in self.seen:
                    self.seen.append(name)
                    thread = threading.Thread(target=self._play, args=(len(self.seen) - 1, obj), daemon=True)
                    self._threads.append(thread)
                    thread.start()
            self._stop.wait(0.02)

    def _reads(self, name: str) -> int:
        path = f"/apis/argoproj.io/v1alpha1/namespaces/{NAMESPACE}/workflows/{name}"
        return sum(1 for r in self.emulator.requests if r["method"] == "GET" and r["path"] == path)

    def _put_status(self, name: str, status: dict) -> None:
        body = json.dumps([{"op": "add", "path": "/status", "value": status}]).encode()
        url = f"{self.emulator.url}/apis/argoproj.io/v1alpha1/namespaces/{NAMESPACE}/workflows/{name}"
        request = urllib.request.Request(url, data=body, method="PATCH",
                                         headers={"Content-Type": "application/json-patch+json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def _play(self, index: int, obj: dict) -> None:
        try:
            recording = self.script(index, obj)
            name = obj["metadata"]["name"]
            for number, status in enumerate(recording.snapshots):
                if self._stop.wait(self.step_seconds):
                    return
                if number == len(recording.snapshots) - 1:
                    # pods and their logs are there by the time the workflow has ended
                    for pod in recording.pods:
                        self.emulator.put_object(pod)
                        if pod["metadata"]["name"] in recording.logs:
                            self.emulator.set_pod_log(NAMESPACE, pod["metadata"]["name"],
                                                      recording.logs[pod["metadata"]["name"]])
                self._put_status(name, status)
                if number == len(recording.snapshots) - 1:
                    break
                # let the tool read each state before the next one replaces it (bounded): of two reads logged
                # after the write returned, at most one was already under way, the other saw this state
                reads = self._reads(name) + 2
                deadline = time.monotonic() + 5
                while self._reads(name) < reads and time.monotonic() < deadline and not self._stop.is_set():
                    time.sleep(0.005)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test through .errors
            self.errors.append(exc)
