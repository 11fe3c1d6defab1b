"""The tutorial's webhook walkthrough (`invoke examples.webhook`): its EventSource and Sensor as steps, and one
round trip -- POST a message to the webhook, until the Sensor's log shows it (bounded).
"""

from __future__ import annotations

import json
import time
from typing import Callable

from . import manifests as m
from .engine import Context, WaitTimeout
from . import follow

WEBHOOK_DIR = m.MANIFESTS / "webhook"
WEBHOOK_SERVICE = "webhook-eventsource-svc"
WEBHOOK_PORT = 12000
WEBHOOK_PATH = "/example"
WEBHOOK_REPOST_SECONDS = 5.0  # an accepted message not logged by then is posted again


def pod_ready(pod: dict) -> bool:
    status = pod.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    return status.get("phase") == "Running" and conditions.get("Ready") == "True" \
        and not (pod.get("metadata") or {}).get("deletionTimestamp")


def pods_ready_health(selector: str):
    """An ObjectStep extra_health: the controller's Deployment has a ready pod (its conditions say only 'deployed')."""
    def health(ctx: Context, live: dict) -> tuple[bool, str]:
        from .steps import kube

        pods = kube(ctx).list("v1", "Pod", ctx.settings.namespace, label_selector=selector)
        ready = [p for p in pods if pod_ready(p)]
        return bool(ready), f"{len(ready)}/{len(pods)} pod(s) ready"

    return health


def webhook_steps(ctx: Context) -> list:
    from .steps import ObjectStep

    docs = [d for path in sorted(WEBHOOK_DIR.glob("*.yaml")) for d in m.render(path, m.variables(ctx.settings))]
    order = {"EventSource": 0, "Sensor": 1}
    steps = []
    for doc in sorted(docs, key=lambda d: order.get(d["kind"], 2)):
        name = doc["metadata"]["name"]
        label = "eventsource-name" if doc["kind"] == "EventSource" else "sensor-name"
        steps.append(ObjectStep(f"webhook/{doc['kind'].lower()}/{name}", lambda c, d=doc: d,
                                title=f"{doc['kind']} {name} from the tutorial",
                                extra_health=pods_ready_health(f"{label}={name}")))
    return steps


def post_json(url: str, body: dict, timeout: float) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(200).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(200).decode("utf-8", "replace")


def sensor_log_line(kube, namespace: str, sensor: str, needle: str) -> str | None:
    """The first line of the Sensor's pod log(s) holding `needle`, or None."""
    from kubernetes.client.exceptions import ApiException

    for pod in kube.list("v1", "Pod", namespace, label_selector=f"sensor-name={sensor}"):
        try:
            text = kube.pod_log(namespace, pod["metadata"]["name"], tail=2000)
        except ApiException as exc:
            if exc.status in (400, 404):  # starting or gone: look again on the next round
                continue
            raise
        for line in text.splitlines():
            if needle in line:
                return line
    return None


def webhook_roundtrip(ctx: Context, endpoint: str, message: str, *, timeout: float, sensor: str = "log",
                      interval: float | None = None, clock: Callable[[], float] = time.monotonic,
                      sleep: Callable[[float], None] = time.sleep) -> tuple[int, str]:
    """POST {"message": ...} to the webhook until accepted, then until the Sensor logged it (bounded).

    A Sensor only sees events published after it subscribed, so a message that was accepted but never
    logged is posted again (each post is one event; the log trigger prints at most one per second).
    Returns (posts made, the Sensor's log line).
    """
    from .steps import kube

    interval = follow.POLL_SECONDS if interval is None else interval
    url = f"http://{endpoint}{WEBHOOK_PATH}"
    deadline = clock() + timeout
    posts = 0
    last = "nothing posted yet"
    next_post = clock()
    while True:
        now = clock()
        if now >= next_post:
            try:
                code, text = post_json(url, {"message": message}, timeout=min(10.0, max(1.0, deadline - now)))
                if 200 <= code < 300:
                    posts += 1
                    last = f"posted {posts} time(s); not in the Sensor's log yet"
                    next_post = now + WEBHOOK_REPOST_SECONDS
                else:
                    last = f"the webhook answered {code}: {text.strip()[:120]}"
                    next_post = now + interval
            except OSError as exc:
                last = f"POST {url} failed: {exc}"
                next_post = now + interval
        if posts:
            line = sensor_log_line(kube(ctx), ctx.settings.namespace, sensor, message)
            if line is not None:
                return posts, line
        remaining = deadline - clock()
        if remaining <= 0:
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for the Sensor {sensor} to log the message; "
                              f"last state: {last}",
                              hint=f"`kubectl -n {ctx.settings.namespace} logs -l sensor-name={sensor}`; is the "
                                   "EventBus `default` ready (`invoke status`)?")
        sleep(min(interval, remaining))
