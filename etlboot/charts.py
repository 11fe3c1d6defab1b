"""Names the pinned argo-helm charts give their objects, derived the way the charts derive them.

Both charts (`_helpers.tpl` of argo-events 2.4.22 and argo-workflows 1.0.18) name things after a
"fullname": the release name alone when it already contains the chart name, else `<release>-<chart>`,
cut to 63 characters without a trailing `-`. The tool must find those objects under the same names.
"""

from __future__ import annotations

ARGO_EVENTS_CHART = "argo-events"
ARGO_WORKFLOWS_CHART = "argo-workflows"


def fullname(release: str, chart: str) -> str:
    name = release if chart in release else f"{release}-{chart}"
    return name[:63].rstrip("-")


def component(release: str, chart: str, part: str) -> str:
    """`<fullname>-<part>`, as the charts name their controller, server and their ServiceAccounts."""
    return f"{fullname(release, chart)}-{part}"[:63].rstrip("-")


def argo_server(settings) -> str:
    """The argo-server Deployment, Service and ServiceAccount (server.name: server)."""
    return component(settings.argo_workflows_release, ARGO_WORKFLOWS_CHART, "server")


def events_controller(settings) -> str:
    """The Argo Events controller's Deployment and its ConfigMap (controller.name: controller-manager)."""
    return component(settings.argo_events_release, ARGO_EVENTS_CHART, "controller-manager")
