"""Each example's expectation, judged on recorded Workflow status objects: a passing run passes, and a run that
breaks the expectation in one specific way fails with a message that names what was wrong."""

from __future__ import annotations

import json

import pytest

import argo_recordings as rec
from etlboot import example_checks as checks
from etlboot import examples as ex
from etlboot.follow import tree_lines
from etlboot.workflows import WorkflowView
from etlboot.engine import StepError


def observed(*recordings: rec.Recording) -> checks.Observed:
    return checks.Observed(
        [r.workflow for r in recordings],
        logs={r.name: r.logs_by_node() for r in recordings},
        pods={r.name: r.pods_by_node() for r in recordings},
    )


def judge(name: str, *recordings: rec.Recording) -> checks.Verdict:
    return ex.get(name).judge(observed(*recordings))


def assert_pass(verdict: checks.Verdict) -> None:
    assert verdict.ok, verdict.detail


def assert_fail(verdict: checks.Verdict, *words: str) -> None:
    assert not verdict.ok, f"expected a failure, got: {verdict.detail}"
    for word in words:
        assert word in verdict.detail, verdict.detail


# -- one pass and at least one fail per example -----------------------------------------------------


def test_hello_world(workflow_spec):
    spec = workflow_spec("hello-world")
    assert_pass(judge("hello-world", rec.hello_world(spec)))
    assert_fail(judge("hello-world", rec.hello_world(spec, fault="wrong-log")), "hello world")
    assert_fail(judge("hello-world", rec.hello_world(spec, fault="failed")), "Failed", "exit code 1")


def test_global_parameters_default_and_override(workflow_spec):
    assert_pass(judge("global-parameters", rec.global_parameters(workflow_spec("global-parameters"))))
    overridden = workflow_spec("global-parameters", message="goodbye world")
    verdict = judge("global-parameters", rec.global_parameters(overridden))
    assert_pass(verdict)
    assert "goodbye world" in verdict.detail
    # the container printed the manifest's default although -p overrode it
    assert_fail(judge("global-parameters", rec.global_parameters(overridden, fault="default-used")), "goodbye world")


def test_arguments_parameters(workflow_spec):
    spec = workflow_spec("arguments-parameters", message="goodbye world")
    assert_pass(judge("arguments-parameters", rec.arguments_parameters(spec)))
    assert_fail(judge("arguments-parameters", rec.arguments_parameters(spec, fault="input-mismatch")),
                "input", "goodbye world")


def test_steps(workflow_spec):
    spec = workflow_spec("steps")
    assert_pass(judge("steps", rec.steps(spec)))
    assert_fail(judge("steps", rec.steps(spec, fault="overlap")), "hello2a", "before hello1 finished")
    assert_fail(judge("steps", rec.steps(spec, fault="split-group")), "same step group")


def test_output_parameter(workflow_spec):
    spec = workflow_spec("output-parameter")
    assert_pass(judge("output-parameter", rec.output_parameter(spec)))
    assert_fail(judge("output-parameter", rec.output_parameter(spec, fault="default")), "Foobar")
    assert_fail(judge("output-parameter", rec.output_parameter(spec, fault="mismatch")), "'goodbye'",
                "'hello world'")


def test_dag_diamond(workflow_spec):
    spec = workflow_spec("dag-diamond")
    assert_pass(judge("dag-diamond", rec.dag_diamond(spec)))
    assert_fail(judge("dag-diamond", rec.dag_diamond(spec, fault="D-early")), "D started", "before C finished")


def test_loops(workflow_spec):
    spec = workflow_spec("loops")
    verdict = judge("loops", rec.loops(spec))
    assert_pass(verdict)
    assert "withItems ran 2" in verdict.detail and "withSequence ran 3" in verdict.detail
    assert_fail(judge("loops", rec.loops(spec, fault="missing-item")), "1 nodes for 2 items")


def test_loops_param_argument(workflow_spec):
    spec = workflow_spec("loops-param-argument")
    items = json.loads(spec["arguments"]["parameters"][0]["value"])
    verdict = judge("loops-param-argument", rec.loops_param_argument(spec))
    assert_pass(verdict)
    assert f"ran {len(items)} nodes" in verdict.detail
    assert_fail(judge("loops-param-argument", rec.loops_param_argument(spec, fault="missing")),
                f"{len(items) - 1} nodes for {len(items)} items")


def test_loops_param_argument_follows_an_overridden_list(workflow_spec):
    two = json.dumps([{"image": "alpine", "tag": "3.22"}, {"image": "busybox", "tag": "1.37"}])
    spec = workflow_spec("loops-param-argument", **{"os-list": two})
    assert_pass(judge("loops-param-argument", rec.loops_param_argument(spec)))
    # a recording of the default four items does not match a submitted list of two
    default = rec.loops_param_argument(workflow_spec("loops-param-argument"))
    default.workflow["spec"] = spec
    assert_fail(judge("loops-param-argument", default), "4 nodes for 2 items")


def test_loops_dag(workflow_spec):
    spec = workflow_spec("loops-dag")
    assert_pass(judge("loops-dag", rec.loops_dag(spec)))
    assert_fail(judge("loops-dag", rec.loops_dag(spec, fault="C-early")), "C started", "before B(1:baz) finished")


def test_artifact_passing(workflow_spec):
    spec = workflow_spec("artifact-passing")
    verdict = judge("artifact-passing", rec.artifact_passing(spec))
    assert_pass(verdict)
    assert "hello-art.tgz" in verdict.detail
    assert_fail(judge("artifact-passing", rec.artifact_passing(spec, fault="wrong-text")), "artifact-passing-old01")
    assert_fail(judge("artifact-passing", rec.artifact_passing(spec, fault="no-artifact")), "no hello-art")


def test_artifact_passing_needs_the_logs(workflow_spec):
    recording = rec.artifact_passing(workflow_spec("artifact-passing"))
    verdict = ex.get("artifact-passing").judge(checks.Observed([recording.workflow]))
    assert_fail(verdict, "no log of generate-artifact")


def test_retry_script(workflow_spec):
    spec = workflow_spec("retry-script")
    verdict = judge("retry-script", rec.retry_script(spec, "succeeded", attempts=3))
    assert_pass(verdict)
    assert "attempt 3 after 2 retries" in verdict.detail
    verdict = judge("retry-script", rec.retry_script(spec, "failed", attempts=11))
    assert_pass(verdict)
    assert "failed after the limit: 11 attempts" in verdict.detail
    assert_fail(judge("retry-script", rec.retry_script(spec, "succeeded", attempts=1)), "first attempt")
    assert_fail(judge("retry-script", rec.retry_script(spec, "failed", attempts=3)), "3 attempts", "allows 11")


def test_synchronization_mutex(workflow_spec):
    spec = workflow_spec("synchronization-mutex")
    first, second = rec.synchronization_mutex(spec)
    verdict = judge("synchronization-mutex", first, second)
    assert_pass(verdict)
    assert "no overlap" in verdict.detail
    first, second = rec.synchronization_mutex(spec, fault="overlap")
    assert_fail(judge("synchronization-mutex", first, second), "overlapped", second.name)
    assert_fail(judge("synchronization-mutex", first), "two workflows")


def test_pod_spec_from_previous_step(workflow_spec):
    spec = workflow_spec("pod-spec-from-previous-step")
    verdict = judge("pod-spec-from-previous-step", rec.pod_spec_from_previous_step(spec))
    assert_pass(verdict)
    assert "'memory': '128Mi'" in verdict.detail
    assert_fail(judge("pod-spec-from-previous-step", rec.pod_spec_from_previous_step(spec, fault="not-patched")),
                "limits are {}")


def test_cron_backfill(workflow_spec):
    spec = workflow_spec("cron-backfill")
    verdict = judge("cron-backfill", rec.cron_backfill(spec))
    assert_pass(verdict)
    assert "3 days, 2020-05-19 … 2020-05-21" in verdict.detail
    assert_fail(judge("cron-backfill", rec.cron_backfill(spec, fault="short")), "2 nodes for 3 items")
    wider = workflow_spec("cron-backfill", month="2026-01", **{"first-day": "1", "last-day": "5"})
    verdict = judge("cron-backfill", rec.cron_backfill(wider))
    assert_pass(verdict)
    assert "5 days, 2026-01-01 … 2026-01-05" in verdict.detail


def test_every_example_has_recordings():
    # a new catalog entry must come with a pass/fail recording above
    tested = {"hello-world", "global-parameters", "arguments-parameters", "steps", "output-parameter", "dag-diamond",
              "loops", "loops-param-argument", "loops-dag", "artifact-passing", "retry-script",
              "synchronization-mutex", "pod-spec-from-previous-step", "cron-backfill"}
    assert {e.name for e in ex.CATALOG} == tested


def test_a_workflow_that_did_not_succeed_fails_every_check(workflow_spec):
    for example in ex.CATALOG:
        if example.name in ("retry-script", "synchronization-mutex"):
            continue
        recording = getattr(rec, example.name.replace("-", "_"))(workflow_spec(example.name))
        recording.workflow["status"]["phase"] = "Error"
        recording.workflow["status"]["message"] = "pod deleted"
        verdict = example.judge(observed(recording))
        assert_fail(verdict, "Error", "pod deleted")


# -- the pieces the checks are made of --------------------------------------------------------------


def test_tree_rows_follow_argo_naming(workflow_spec):
    view = WorkflowView(rec.steps(workflow_spec("steps")).workflow)
    shown = [("  " * depth) + node["displayName"] for depth, node in view.rows()]
    assert shown == ["steps-wk5m5", "  [0]", "    hello1", "  [1]", "    hello2a", "    hello2b"]
    dag = WorkflowView(rec.loops_dag(workflow_spec("loops-dag")).workflow)
    shown = [("  " * depth) + node["displayName"] for depth, node in dag.rows()]
    # C is a dependent of both B items (children edges) but sits under the DAG, not under B
    assert shown == ["loops-dag-7vx2q", "  A", "  B", "    B(0:bar)", "    B(1:baz)", "  C"]


def test_tree_lines_show_template_phase_duration_and_message(workflow_spec):
    recording = rec.retry_script(workflow_spec("retry-script"), "succeeded", attempts=2)
    lines = tree_lines(WorkflowView(recording.workflow))
    assert lines[0].startswith("✔ retry-script-6xq8c  Succeeded  12s  (1/2)")
    assert lines[1] == "  ✖ retry-script-6xq8c(0)  retry-script  Failed  5s  Error (exit code 1)"
    assert lines[2] == "  ✔ retry-script-6xq8c(1)  retry-script  Succeeded  5s"


def test_snapshots_show_a_running_tree(workflow_spec):
    recording = rec.dag_diamond(workflow_spec("dag-diamond"))
    early = WorkflowView({"metadata": {"name": recording.name}, "status": recording.snapshots[1]})
    assert early.phase == "Running"
    phases = {n["displayName"]: n["phase"] for n in early.nodes.values()}
    assert phases == {"dag-diamond-d6xfs": "Running", "A": "Succeeded", "B": "Running", "C": "Running"}


@pytest.mark.parametrize("sequence, params, want", [
    ({"count": "3"}, {}, ["0", "1", "2"]),
    ({"start": "5", "end": "3"}, {}, ["5", "4", "3"]),
    ({"start": "{{workflow.parameters.a}}", "end": "{{workflow.parameters.b}}", "format": "2020-05-%02d"},
     {"a": "9", "b": "10"}, ["2020-05-09", "2020-05-10"]),
    ({"count": "0"}, {}, []),
])
def test_sequence_items(sequence, params, want):
    assert checks.sequence_items(sequence, params) == want


def test_sequence_items_refuse_nonsense():
    with pytest.raises(checks.CheckFailed, match="not a whole number"):
        checks.sequence_items({"count": "three"}, {})
    with pytest.raises(checks.CheckFailed, match="neither end nor count"):
        checks.sequence_items({"start": "1"}, {})
    with pytest.raises(checks.CheckFailed, match="'b' is not among"):
        checks.sequence_items({"count": "{{workflow.parameters.b}}"}, {})


def test_item_labels_are_argo_node_labels():
    assert checks.item_label({"tag": "3.6", "image": "alpine"}) == "image:alpine,tag:3.6"
    assert checks.item_label("say (hi)") == "say hi"
    assert checks.item_label(True) == "true"


def test_parse_parameters():
    assert ex.parse_parameters(["message=goodbye world", "expr=a=b"]) == {"message": "goodbye world", "expr": "a=b"}
    with pytest.raises(StepError, match="not key=value"):
        ex.parse_parameters(["message"])
    with pytest.raises(StepError, match="not key=value"):
        ex.parse_parameters(["=x"])


def test_with_parameters_overrides_and_refuses_unknown_names(rendered):
    workflow = next(d for d in rendered["global-parameters"] if d["kind"] == "Workflow")
    changed = ex.with_parameters(workflow, {"message": "goodbye world"}, "global-parameters")
    assert changed["spec"]["arguments"]["parameters"] == [{"name": "message", "value": "goodbye world"}]
    assert workflow["spec"]["arguments"]["parameters"][0]["value"] == "hello world"  # the original is untouched
    with pytest.raises(StepError, match="has no parameter mesage .it has: message"):
        ex.with_parameters(workflow, {"mesage": "x"}, "global-parameters")
    hello = next(d for d in rendered["hello-world"] if d["kind"] == "Workflow")
    assert "arguments" not in ex.with_parameters(hello, {}, "hello-world")["spec"]
    with pytest.raises(StepError, match=r"it has: none"):
        ex.with_parameters(hello, {"message": "x"}, "hello-world")


def test_unknown_example_name_suggests_the_closest():
    with pytest.raises(StepError, match="did you mean dag-diamond"):
        ex.get("dag-diamon")
