"""The tutorial's walkthrough examples: which manifest, what it teaches, where the tutorial shows it, and its check.

`invoke examples.list` prints this catalog; `examples.run NAME` renders manifests/examples/NAME.yaml with the
settings and the `-p` overrides (`load`, `with_parameters`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from . import manifests as m
from .engine import StepError
from .example_checks import (CheckFailed, Observed, Verdict, check_arguments_parameters, check_artifact_passing,
                             check_cron_backfill, check_dag_diamond, check_global_parameters, check_hello_world,
                             check_loops, check_loops_dag, check_loops_param_argument, check_mutex,
                             check_output_parameter, check_pod_spec_patch, check_retry_script, check_steps)

EXAMPLES_DIR = m.MANIFESTS / "examples"
EXAMPLE_LABEL = "argo-etl-bootstrap/example"


@dataclass(frozen=True)
class Example:
    name: str
    teaches: str
    section: str  # the tutorial's Korean heading (path)
    gist: str  # the section in English
    check: Callable[[Observed], str]
    needs_logs: bool = False
    needs_pods: bool = False
    submissions: int = 1

    @property
    def path(self) -> Path:
        return EXAMPLES_DIR / f"{self.name}.yaml"

    def judge(self, observed: Observed) -> Verdict:
        try:
            return Verdict(True, self.check(observed))
        except CheckFailed as exc:
            return Verdict(False, str(exc))


CATALOG: tuple[Example, ...] = (
    Example("hello-world", "a container template run as the entrypoint", "Argo Workflows 소개 › 단순한 워크플로우 예제",
            "A simple workflow", check_hello_world, needs_logs=True),
    Example("global-parameters", "workflow arguments read as {{workflow.parameters.X}}; -p overrides them",
            "매개변수와 인자 › 글로벌 매개변수", "Parameters and arguments › global parameters",
            check_global_parameters, needs_logs=True),
    Example("arguments-parameters", "a template's input parameters fed by the workflow's arguments",
            "매개변수와 인자 › 템플릿 로컬 입력/출력 매개변수", "Parameters and arguments › template input/output parameters",
            check_arguments_parameters, needs_logs=True),
    Example("steps", "step groups run in order; steps inside a group run in parallel",
            "멀티 스텝 워크플로우 예제", "A multi-step workflow", check_steps),
    Example("output-parameter", "a step's output parameter (from a file) passed to the next step",
            "멀티 스텝 워크플로우 예제 › 출력 매개변수를 사용하는 멀티 스텝 예제", "Multi-step with an output parameter",
            check_output_parameter),
    Example("dag-diamond", "DAG tasks ordered by `depends` (A → B, C → D)",
            "DAG 워크플로우 예제", "A DAG workflow", check_dag_diamond),
    Example("loops", "withItems (one node per item) and withSequence (counted repeats)",
            "루프 예제", "Loops", check_loops),
    Example("loops-param-argument", "withParam over a JSON list argument; each item picks the image",
            "루프 예제 › JSON 객체 형태의 인자로 루프 이용", "Looping over a JSON list argument",
            check_loops_param_argument),
    Example("loops-dag", "a loop inside a DAG; the dependent task waits for every item",
            "루프 예제 › DAG 에서 루프 이용", "Loops in a DAG", check_loops_dag),
    Example("artifact-passing", "an output artifact stored in MinIO and handed to the next step",
            "아티팩트 워크플로우 예제", "An artifact workflow", check_artifact_passing, needs_logs=True),
    Example("retry-script", "retryStrategy.limit re-runs a failing script",
            "기타 › 재시도 설정", "Misc › retries", check_retry_script),
    Example("synchronization-mutex", "a workflow-level mutex serialises two submissions",
            "기타 › 뮤텍스", "Misc › mutex", check_mutex, submissions=2),
    Example("pod-spec-from-previous-step", "podSpecPatch sets a pod's resources from a previous step's output",
            "기타 › 동적인 파드 스펙 지정", "Misc › a pod spec decided at run time", check_pod_spec_patch,
            needs_pods=True),
    Example("cron-backfill", "a WorkflowTemplate run nightly by a CronWorkflow and backfilled with withSequence",
            "기타 › 특정 기간에 대한 재작업", "Misc › re-running a past period (backfill)", check_cron_backfill),
)

BY_NAME = {example.name: example for example in CATALOG}


def get(name: str) -> Example:
    try:
        return BY_NAME[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, BY_NAME, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise StepError(f"no example named {name!r}{hint}", hint="`invoke examples.list` shows them") from None


# -- manifests and parameters ----------------------------------------------------------------------


def load(example: Example, settings) -> list[dict]:
    return m.render(example.path, m.variables(settings))


def parse_parameters(pairs: Iterable[str]) -> dict[str, str]:
    """`-p key=value` pairs (the value may itself contain '=')."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise StepError(f"-p {pair!r} is not key=value", hint='e.g. -p message="goodbye world"')
        out[key] = value
    return out


def with_parameters(workflow: dict, overrides: dict[str, str], example: str) -> dict:
    """A copy of `workflow` whose spec.arguments.parameters take the overrides; unknown names are refused."""
    workflow = json.loads(json.dumps(workflow))
    parameters = ((workflow.setdefault("spec", {}).setdefault("arguments", {})).setdefault("parameters", []))
    known = {p["name"]: p for p in parameters}
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        have = ", ".join(known) or "none"
        raise StepError(f"{example} has no parameter {', '.join(unknown)} (it has: {have})",
                        hint="`invoke examples.list` shows each example; see its manifest for the parameters")
    for name, value in overrides.items():
        known[name]["value"] = value
    if not parameters:
        workflow["spec"]["arguments"].pop("parameters")
        if not workflow["spec"]["arguments"]:
            workflow["spec"].pop("arguments")
    return workflow

