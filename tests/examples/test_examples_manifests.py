"""manifests/examples and manifests/webhook: each renders, passes the strict Hera check (unknown and
v4-removed fields rejected), and follows the project's conventions and the brief's replacements for the
tutorial's obsolete parts (docker/whalesay, singular mutex, CronWorkflow `schedule`)."""

from __future__ import annotations

import re

import pytest
import yaml

from etlboot import examples as ex
from etlboot import webhook
from helpers.hera_check import ManifestError, render_manifest, validate_argo_manifest
from helpers.quantity import parse_quantity

EXAMPLE_FILES = sorted(ex.EXAMPLES_DIR.glob("*.yaml"))
WEBHOOK_FILES = sorted(webhook.WEBHOOK_DIR.glob("*.yaml"))
ALL_FILES = EXAMPLE_FILES + WEBHOOK_FILES


def ids(paths):
    return [f"{p.parent.name}/{p.name}" for p in paths]


def walk(value, path=""):
    """(path, key, value) for every mapping entry, recursively."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield path, key, item
            yield from walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk(item, f"{path}.{index}")


def containers(doc):
    for _, key, value in walk(doc):
        if key in ("container", "script") and isinstance(value, dict):
            yield value


@pytest.mark.parametrize("path", ALL_FILES, ids=ids(ALL_FILES))
def test_renders_and_passes_the_strict_hera_check(path):
    docs = render_manifest(path)
    assert docs
    for doc in docs:
        validate_argo_manifest(doc)


def test_the_check_would_catch_what_the_tutorial_wrote():
    """The tutorial's mutex and a typo are rejected, so the test above can fail."""
    [doc] = render_manifest(ex.EXAMPLES_DIR / "synchronization-mutex.yaml")
    doc["spec"]["synchronization"] = {"mutex": {"name": "test"}}
    with pytest.raises(ManifestError, match="synchronization.mutex: removed field"):
        validate_argo_manifest(doc)
    cron = next(d for d in render_manifest(ex.EXAMPLES_DIR / "cron-backfill.yaml") if d["kind"] == "CronWorkflow")
    cron["spec"]["schedule"] = cron["spec"].pop("schedules")[0]
    with pytest.raises(ManifestError, match="schedule: removed field"):
        validate_argo_manifest(cron)
    [doc] = render_manifest(ex.EXAMPLES_DIR / "hello-world.yaml")
    doc["spec"]["entrypont"] = doc["spec"].pop("entrypoint")
    with pytest.raises(ManifestError, match="entrypont: unknown field"):
        validate_argo_manifest(doc)


def test_every_catalog_entry_has_its_manifest_and_every_manifest_an_entry():
    assert [e.path for e in ex.CATALOG if not e.path.exists()] == []
    assert sorted(p.stem for p in EXAMPLE_FILES) == sorted(e.name for e in ex.CATALOG)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=ids(EXAMPLE_FILES))
def test_one_workflow_per_example_with_generate_name_and_the_workflow_service_account(path):
    docs = render_manifest(path)
    workflows = [d for d in docs if d["kind"] == "Workflow"]
    assert len(workflows) == 1
    [workflow] = workflows
    assert "name" not in workflow["metadata"] and workflow["metadata"]["generateName"].endswith("-")
    for doc in docs:
        if doc["kind"] in ("Workflow", "WorkflowTemplate"):
            assert doc["spec"]["serviceAccountName"] == "argo-workflow"
        if doc["kind"] == "CronWorkflow":  # runs the template, which names the ServiceAccount
            assert doc["spec"]["workflowSpec"] == {"workflowTemplateRef": {"name": "example-daily-job"}}
    entry = workflow["spec"]["entrypoint"]
    assert entry in {t["name"] for t in workflow["spec"]["templates"]}


@pytest.mark.parametrize("path", ALL_FILES, ids=ids(ALL_FILES))
def test_no_namespace_no_managed_by_label_and_only_known_placeholders(path):
    text = path.read_text(encoding="utf-8")
    used = set(re.findall(r"(?<!\$)\$\{(\w+)\}", text))
    assert used <= {"WORKFLOW_SA", "SENSOR_SA"}, used
    for doc in render_manifest(path):
        assert "namespace" not in doc["metadata"]
        assert "app.kubernetes.io/managed-by" not in (doc["metadata"].get("labels") or {})


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=ids(EXAMPLE_FILES))
def test_images_are_small_maintained_and_pinned(path):
    for doc in render_manifest(path):
        rendered = yaml.safe_dump(doc)  # what is applied: comments may still name the tutorial's image
        assert "whalesay" not in rendered and "cowsay" not in rendered
        for container in containers(doc):
            image = container["image"]
            if "{{" in image:  # chosen per item (loops-param-argument): checked below
                continue
            name, _, tag = image.rpartition(":")
            assert name in ("busybox", "alpine", "python"), image
            assert tag and tag != "latest" and re.match(r"\d", tag), image


def test_loops_param_argument_items_name_pinned_images():
    [doc] = render_manifest(ex.EXAMPLES_DIR / "loops-param-argument.yaml")
    items = yaml.safe_load(doc["spec"]["arguments"]["parameters"][0]["value"])
    assert len(items) == 4
    for item in items:
        assert item["image"] in ("alpine", "debian", "python") and item["tag"] not in ("", "latest")


@pytest.mark.parametrize("path", ALL_FILES, ids=ids(ALL_FILES))
def test_nothing_removed_in_argo_workflows_v4(path):
    for doc in render_manifest(path):
        for where, key, value in walk(doc):
            assert not (where.endswith("synchronization") and key in ("mutex", "semaphore")), (path, where, key)
            assert not (doc["kind"] == "CronWorkflow" and where == ".spec" and key == "schedule"), path
            assert key != "podPriority", (path, where)


def test_the_mutex_and_cron_use_the_v4_lists():
    [mutex] = render_manifest(ex.EXAMPLES_DIR / "synchronization-mutex.yaml")
    assert mutex["spec"]["synchronization"] == {"mutexes": [{"name": "example-mutex"}]}
    cron = next(d for d in render_manifest(ex.EXAMPLES_DIR / "cron-backfill.yaml") if d["kind"] == "CronWorkflow")
    assert cron["spec"]["schedules"] == ["0 2 * * *"]


def _pod_spec_patch_example() -> tuple[dict, dict]:
    """(what parse-resources prints, the `main` container setup-resources' podSpecPatch makes of it)."""
    [doc] = render_manifest(ex.EXAMPLES_DIR / "pod-spec-from-previous-step.yaml")
    parse = next(t for t in doc["spec"]["templates"] if t["name"] == "parse-resources-tmpl")
    printed = parse["script"]["source"].split("'")[1]
    setup = next(t for t in doc["spec"]["templates"] if t["name"] == "setup-resources-tmpl")
    patch = setup["podSpecPatch"].replace("{{inputs.parameters.resources}}", printed)
    [main] = yaml.safe_load(patch)["containers"]
    return yaml.safe_load(printed), main


def test_the_pod_spec_patch_sets_main_from_the_previous_step_within_a_default_minikube():
    asked, main = _pod_spec_patch_example()
    assert main == {"name": "main", "resources": {"limits": asked, "requests": asked}}
    assert set(asked) == {"memory", "cpu"}
    # a default minikube (MINIKUBE_CPUS=4, MINIKUBE_MEMORY_MB=8192) schedules it next to the stack
    assert parse_quantity(asked["cpu"]) <= 1 and parse_quantity(asked["memory"]) <= 1024 * 2**20


@pytest.mark.parametrize("kind", ["limits", "requests"])
def test_the_pod_spec_patch_leaves_room_for_the_emissary_wrapper_in_main(kind):
    # argoexec emissary runs inside `main` and shares its limit; it is OOM-killed at 30-64Mi
    # (argo-workflows #8456, #11223)
    _, main = _pod_spec_patch_example()
    memory = main["resources"][kind]["memory"]
    assert parse_quantity(memory) >= 128 * 2**20, f"main {kind}.memory {memory} < 128Mi"


def test_the_retry_script_fails_its_first_attempt_on_purpose():
    [doc] = render_manifest(ex.EXAMPLES_DIR / "retry-script.yaml")
    [template] = doc["spec"]["templates"]
    assert template["retryStrategy"] == {"limit": "10"}
    source = template["script"]["source"]
    assert 'int("{{retries}}")' in source and "1 if attempt == 0" in source


def test_webhook_eventsource_and_log_sensor_match_the_tutorial():
    source = next(d for p in WEBHOOK_FILES for d in render_manifest(p) if d["kind"] == "EventSource")
    sensor = next(d for p in WEBHOOK_FILES for d in render_manifest(p) if d["kind"] == "Sensor")
    assert source["metadata"]["name"] == "webhook"  # → Service webhook-eventsource-svc
    assert source["spec"]["service"]["ports"] == [{"port": webhook.WEBHOOK_PORT, "targetPort": webhook.WEBHOOK_PORT}]
    assert source["spec"]["webhook"]["example"] == {
        "port": str(webhook.WEBHOOK_PORT), "endpoint": webhook.WEBHOOK_PATH, "method": "POST",
        # required by the upstream schema (tests/test_strict_schemas.py); informational for a plain webhook
        "url": f"http://{webhook.WEBHOOK_SERVICE}:{webhook.WEBHOOK_PORT}"}
    assert sensor["metadata"]["name"] == "log"
    assert sensor["spec"]["dependencies"] == [{"name": "test-dep", "eventSourceName": "webhook",
                                               "eventName": "example"}]
    assert sensor["spec"]["triggers"][0]["template"]["log"] == {"intervalSeconds": 1}
    assert sensor["spec"]["template"]["serviceAccountName"] == "operate-workflow-sa"


def test_the_shell_script_dollars_survive_rendering():
    template = next(d for d in render_manifest(ex.EXAMPLES_DIR / "cron-backfill.yaml")
                    if d["kind"] == "WorkflowTemplate")
    source = template["spec"]["templates"][0]["script"]["source"]
    assert 'if [ "$day" = yesterday ]; then' in source
    assert 'day=$(date -u -d "@$(( $(date +%s) - 86400 ))" +%Y-%m-%d)' in source
