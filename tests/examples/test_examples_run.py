"""`invoke examples.run` / `examples.all` against the Kubernetes API emulator, with a stand-in for Argo's
controller that writes the recorded status of each created Workflow through the HTTP API."""

from __future__ import annotations

import time

import pytest
from invoke import Context, Exit

import argo_recordings as rec
from argo_recordings import by_example
from argo_standin import NAMESPACE
from etlboot import examples as ex
from etlboot.tasks import examples as tasks

WORKFLOWS = f"/apis/argoproj.io/v1alpha1/namespaces/{NAMESPACE}/workflows"


def posts(emulator, path=WORKFLOWS):
    return [r for r in emulator.requests if r["method"] == "POST" and r["path"] == path]


def test_run_creates_the_workflow_with_the_overridden_parameter_and_passes(cluster, argo, capsys):
    argo(by_example())
    tasks.run_example(Context(), "global-parameters", parameters=["message=goodbye world"])
    [post] = posts(cluster)
    body = post["body"]
    assert body["metadata"]["generateName"] == "global-parameters-"
    assert "name" not in body["metadata"]
    assert body["metadata"]["namespace"] == NAMESPACE
    assert body["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "argo-etl-bootstrap",
                                          "app.kubernetes.io/part-of": "argo-etl-bootstrap",
                                          ex.EXAMPLE_LABEL: "global-parameters"}
    assert body["spec"]["arguments"]["parameters"] == [{"name": "message", "value": "goodbye world"}]
    assert body["spec"]["serviceAccountName"] == "argo-workflow"
    out = capsys.readouterr().out
    name = post["status"] == 201 and cluster.objects("Workflow", NAMESPACE)[0]["metadata"]["name"]
    assert f"created Workflow/{name} in {NAMESPACE}" in out
    assert f"{name}: Running" in out and f"{name}: Succeeded" in out
    assert "✓ global-parameters: the global parameter reached the container: 'goodbye world'" in out


def test_run_follows_by_polling_and_reads_the_pods_and_logs(cluster, argo, capsys):
    argo(by_example())
    tasks.run_example(Context(), "hello-world", logs=True)
    name = cluster.objects("Workflow", NAMESPACE)[0]["metadata"]["name"]
    gets = [r for r in cluster.requests if r["method"] == "GET" and r["path"] == f"{WORKFLOWS}/{name}"]
    assert len(gets) >= 2  # polled until the end, not read once
    assert not [r for r in cluster.requests if r["query"].get("watch")]
    pod_lists = [r for r in cluster.requests if r["path"] == f"/api/v1/namespaces/{NAMESPACE}/pods"]
    assert pod_lists and pod_lists[0]["query"]["labelSelector"] == f"workflows.argoproj.io/workflow={name}"
    logs = [r for r in cluster.requests if r["path"].endswith("/log")]
    assert logs and all(r["query"] == {"container": "main"} for r in logs)
    out = capsys.readouterr().out
    assert f"── {name} ({name})" in out
    assert "   hello world" in out
    assert f"✔ {name}  Succeeded" in out  # the final tree
    assert "✓ hello-world: Succeeded; the log says 'hello world'" in out


def test_a_failed_expectation_exits_nonzero(cluster, argo, capsys):
    argo(by_example({"dag-diamond": "D-early"}))
    with pytest.raises(Exit) as exit_info:
        tasks.run_example(Context(), "dag-diamond")
    assert exit_info.value.code == 1
    assert "✗ dag-diamond: D started at" in capsys.readouterr().out


def test_a_failed_workflow_exits_nonzero(cluster, argo, capsys):
    argo(by_example({"hello-world": "failed"}))
    with pytest.raises(Exit) as exit_info:
        tasks.run_example(Context(), "hello-world")
    assert exit_info.value.code == 1
    out = capsys.readouterr().out
    assert "✖" in out and "Error (exit code 1)" in out
    assert "✗ hello-world: hello-world-" in out and "ended Failed" in out


def test_mutex_submits_two_and_checks_they_did_not_overlap(cluster, argo, capsys):
    argo(by_example())
    tasks.run_example(Context(), "synchronization-mutex")
    assert len(posts(cluster)) == 2
    out = capsys.readouterr().out
    assert "Waiting for argo-etl/Mutex/example-mutex lock" in out
    assert "no overlap" in out


def test_mutex_overlap_fails(cluster, argo):
    argo(by_example({"synchronization-mutex": "overlap"}))
    with pytest.raises(Exit):
        tasks.run_example(Context(), "synchronization-mutex")


def test_cron_backfill_applies_the_template_and_the_cron_then_submits_the_backfill(cluster, argo, capsys):
    argo(by_example())
    tasks.run_example(Context(), "cron-backfill", parameters=["first-day=1", "last-day=4", "month=2026-01"])
    applies = [r for r in cluster.requests if r["method"] == "PATCH"
               and r["content_type"] == "application/apply-patch+yaml"]
    assert [r["path"].rsplit("/", 2)[-2:] for r in applies] == [["workflowtemplates", "example-daily-job"],
                                                              ["cronworkflows", "example-daily-job"]]
    assert all(r["query"]["fieldManager"] == "argo-etl-bootstrap" for r in applies)
    cron = cluster.get("CronWorkflow", "example-daily-job", NAMESPACE)
    assert cron["spec"]["schedules"] == ["0 2 * * *"] and "schedule" not in cron["spec"]
    assert cron["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "argo-etl-bootstrap"
    template = cluster.get("WorkflowTemplate", "example-daily-job", NAMESPACE)
    assert template["spec"]["serviceAccountName"] == "argo-workflow"
    [post] = posts(cluster)
    assert post["body"]["spec"]["templates"][0]["steps"][0][0]["templateRef"] == {"name": "example-daily-job",
                                                                                  "template": "main"}
    assert "4 days, 2026-01-01 … 2026-01-04" in capsys.readouterr().out


def test_following_is_bounded(cluster, argo, capsys):
    def never_ends(index, obj):
        recording = rec.steps(obj["spec"], name=obj["metadata"]["name"])
        recording.snapshots = recording.snapshots[:1]  # Running, and nothing after
        return recording

    argo(never_ends)
    began = time.monotonic()
    with pytest.raises(Exit) as exit_info:
        tasks.run_example(Context(), "steps", timeout=1)
    assert exit_info.value.code == 1
    assert time.monotonic() - began < 10
    out = capsys.readouterr().out
    assert "timed out after 1s following steps-" in out and "Running" in out
    assert "hint: raise --timeout" in out


def test_nothing_is_created_without_argo_installed(cluster, capsys):
    cluster.delete_object("CustomResourceDefinition", "workflows.argoproj.io")
    with pytest.raises(Exit):
        tasks.run_example(Context(), "hello-world")
    assert not cluster.write_requests()
    out = capsys.readouterr().out
    assert "Argo Workflows is not installed" in out and "invoke up" in out


def test_examples_all_without_argo_is_one_line_not_every_example_failing(cluster, capsys):
    cluster.delete_object("CustomResourceDefinition", "workflows.argoproj.io")
    with pytest.raises(Exit) as exit_info:
        tasks.run_all(Context())
    assert exit_info.value.code == 1
    assert not cluster.write_requests()
    out = capsys.readouterr().out
    assert "Argo Workflows is not installed" in out and "invoke up" in out
    assert "──" not in out and out.count("✗") == 1, out


def test_nothing_is_created_on_another_context(cluster, monkeypatch, capsys):
    monkeypatch.setenv("KUBE_CONTEXT", "production")
    with pytest.raises(Exit):
        tasks.run_example(Context(), "hello-world")
    assert not cluster.write_requests()
    assert "kube context 'production' does not exist" in capsys.readouterr().out


def test_an_unknown_parameter_is_refused_before_any_request(cluster, capsys):
    with pytest.raises(Exit) as exit_info:
        tasks.run_example(Context(), "global-parameters", parameters=["mesage=hi"])
    assert exit_info.value.code == 1
    assert not cluster.requests
    assert "global-parameters has no parameter mesage (it has: message)" in capsys.readouterr().out


def test_an_unknown_example_or_a_malformed_parameter_is_a_usage_error(cluster):
    with pytest.raises(Exit) as exit_info:
        tasks.run_example(Context(), "hello-wrld")
    assert exit_info.value.code == 2 and "did you mean hello-world" in str(exit_info.value)
    with pytest.raises(Exit) as exit_info:
        tasks.run_example(Context(), "hello-world", parameters=["message"])
    assert exit_info.value.code == 2
    assert not cluster.requests


def test_all_runs_every_example_in_order_and_summarises(cluster, argo, capsys):
    argo(by_example({"loops-dag": "C-early"}))
    with pytest.raises(Exit) as exit_info:
        tasks.run_example(Context(), "all")
    assert exit_info.value.code == 1
    created = [p["body"]["metadata"]["labels"][ex.EXAMPLE_LABEL] for p in posts(cluster)]
    expected = [e.name for e in ex.CATALOG for _ in range(e.submissions)]
    assert created == expected
    out = capsys.readouterr().out
    assert "13/14 examples passed; failed: loops-dag" in out
    for example in ex.CATALOG:
        assert f"── {example.name}: {example.teaches}" in out
