"""No traceback without --debug, anywhere: every task `./etl --list` names, run as the user runs it, with each
kind of bad input that applies to it, exits non-zero with exactly one error line naming the cause, and changes
no file in its project (not even `.env`).

The kinds: no cluster (a kubeconfig whose server is a port where nothing listens), no kubeconfig (KUBECONFIG
names a path that does not exist), wrong types (every int/float flag given `abc`), unknown names (a dataset,
a target, an --only part, an example, a tool), files that do not exist or hold binary data, and unset settings.

Each case runs `python -m etlboot …` (what `./etl` execs, with ETLBOOT_LAUNCHER=./etl as `./etl` exports it)
in its own copy of the project, with HOME in a temporary directory, the tool stand-ins on PATH and
CLUSTER=existing, so nothing real is touched. Run alone (`-n 0`) the cases run in parallel threads; under
xdist each worker runs the ones it is given.
"""

from __future__ import annotations

import compileall
import json
import os
import shutil
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from stack_harness import standins_bin

ROOT = Path(__file__).resolve().parent.parent
#: what a run may write to: the venv, caches, tools and bytecode (not compared, not copied)
NOT_THE_PROJECT = {".venv", ".cache", ".bin", "__pycache__", ".git", ".pytest_cache"}
#: where the one error line starts: the engine's failed step, `interruptible`, usage errors (etlboot/cli.py)
ERROR = "✗ "
KUBE_TOKEN, WEBHOOK_PATH = "bad-input-kube-token", "bad-input-webhook-path-0123456789"
#: what no output may show, however the task fails
SECRETS = (KUBE_TOKEN, WEBHOOK_PATH, "testing-secret-key")
#: stands for the folder of sample files a case gets ({files} in argv and in what the line says)
FILES_MARK = "{files}"


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    #: no-cluster, no-kubeconfig, broken-kubeconfig; aws-no-cluster, aws-no-kubeconfig (AWS settings point at
    #: moto); aws-unset (no AWS setting, no credentials)
    world: str
    says: tuple[str, ...]  # what the error line holds; {server}, {kubeconfig}, {files} are filled in
    code: int = 1

    @property
    def id(self) -> str:
        return " ".join(self.argv).replace(FILES_MARK, "") + f" [{self.world}]"


def no_cluster(*argv: str) -> Case:
    return Case(argv, "no-cluster", ("{server}", "Connection refused"))


def no_kubeconfig(*argv: str) -> Case:
    return Case(argv, "no-kubeconfig", ("{kubeconfig}",))


def broken_kubeconfig(*argv: str) -> Case:
    """KUBE_CONTEXT is in the kubeconfig, but its cluster is not: the client refuses it (ConfigException)."""
    return Case(argv, "broken-kubeconfig", ("the kubeconfig cannot be used", "{kubeconfig}"))


def usage(*argv: str, says: str) -> Case:
    """A flag or name the task cannot take: refused before anything is read (the world has no cluster, so a
    case that got further would say so instead), exit 2 as every usage error."""
    return Case(argv, "no-cluster", (says,), code=2)


def refused(*argv: str, says: str) -> Case:
    """A --dataset or --file demo.* cannot use: a usage error, refused before anything is read (exit 2)."""
    return Case(argv, "no-cluster", (says,), code=2)


def wrong_type(*argv: str) -> Case:
    flag = argv[-1]
    return Case((*argv, "abc"), "no-cluster", (f"{flag} takes", "not 'abc'"), code=2)


def unset_aws(*argv: str, names=("AWS_REGION", "AWS_PROFILE", "AWS_BUCKET")) -> Case:
    return Case(argv, "aws-unset", tuple(names))


def aws(world: str, *argv: str) -> Case:
    says = ("{server}", "Connection refused") if world == "aws-no-cluster" else ("{kubeconfig}",)
    return Case(argv, world, says)


NO_YES = "refusing without a terminal to ask; pass --yes"

#: every task, and the bad input that applies to it; a task `./etl --list` shows without a row fails the test
BAD_INPUT: dict[str, list[Case]] = {
    "up": [no_cluster("up"), no_kubeconfig("up"),
           usage("up", "--only", "nope", says="unknown --only nope")],
    "status": [no_cluster("status"), no_kubeconfig("status"),
               broken_kubeconfig("status"),
               usage("status", "--only", "platform,nope", says="unknown --only nope")],
    "down": [no_cluster("down", "--yes"), no_kubeconfig("down", "--yes"),
             usage("down", "--minikube", "--yes", says="--minikube only goes with --purge"),
             usage("down", says=NO_YES)],
    "doctor": [no_cluster("doctor"), no_kubeconfig("doctor"),
               broken_kubeconfig("doctor")],
    "trace": [usage("trace", says="give the input's key"), no_cluster("trace", "--key", "input/test.csv"),
              no_kubeconfig("trace", "--key", "input/test.csv"), broken_kubeconfig("trace", "--key", "input/test.csv"),
              wrong_type("trace", "--key", "input/test.csv", "--wait", "--timeout"),
              usage("trace", "--key", "input/test.csv", "--target", "sftp", says="unknown --target 'sftp'")],
    "render": [Case(("render", "--out", f"{FILES_MARK}/a-file/manifests"), "no-cluster",
                    ("a-file/manifests", "Not a directory"))],
    "ui": [no_cluster("ui"), no_cluster("ui", "--show-token"), no_kubeconfig("ui"),
           no_kubeconfig("ui", "--show-token"), broken_kubeconfig("ui", "--show-token"),
           wrong_type("ui", "--argo-port"), wrong_type("ui", "--minio-port")],
    "aws.setup": [unset_aws("aws.setup"), unset_aws("aws.setup", "--dry-run"),
                  aws("aws-no-cluster", "aws.setup"),
                  aws("aws-no-kubeconfig", "aws.setup")],
    "aws.status": [unset_aws("aws.status"), aws("aws-no-cluster", "aws.status"),
                   aws("aws-no-kubeconfig", "aws.status")],
    "aws.teardown": [unset_aws("aws.teardown", "--yes", names=("AWS_REGION", "AWS_PROFILE", "AWS_BUCKET")),
                     aws("aws-no-cluster", "aws.teardown", "--yes"),
                     aws("aws-no-kubeconfig", "aws.teardown", "--yes"),
                     Case(("aws.teardown",), "aws-no-cluster", (NO_YES,), code=2)],
    "demo.upload": [no_cluster("demo.upload"), no_kubeconfig("demo.upload"), broken_kubeconfig("demo.upload"),
                    no_cluster("demo.upload", "--target", "ftp"),
                    unset_aws("demo.upload", "--target", "aws", names=("AWS_REGION",)),
                    usage("demo.upload", "--target", "nope", says="unknown --target 'nope'"),
                    refused("demo.upload", "--dataset", "nope", says="unknown --dataset 'nope'"),
                    refused("demo.upload", "--file", f"{FILES_MARK}/missing.csv", says="missing.csv: no such file"),
                    refused("demo.upload", "--file", f"{FILES_MARK}/photo.csv",
                            says="photo.csv: this is not a text file"),
                    refused("demo.upload", "--file", f"{FILES_MARK}/notes.txt", says="listens for input/*.csv only"),
                    wrong_type("demo.upload", "--delay"), wrong_type("demo.upload", "--timeout")],
    "demo.verify": [no_cluster("demo.verify"), no_kubeconfig("demo.verify"),
                    refused("demo.verify", "--dataset", "nope", says="unknown --dataset 'nope'"),
                    refused("demo.verify", "--file", f"{FILES_MARK}/missing.csv", says="missing.csv: no such file"),
                    refused("demo.verify", "--file", f"{FILES_MARK}/photo.csv",
                            says="photo.csv: this is not a text file")],
    "examples.list": [usage("examples.list", "nope", says="'nope'")],
    "examples.run": [no_cluster("examples.run", "hello-world"), no_kubeconfig("examples.run", "hello-world"),
                     broken_kubeconfig("examples.run", "hello-world"),
                     usage("examples.run", "nope", says="no example named 'nope'"),
                     usage("examples.run", "hello-wrld", says="did you mean hello-world?"),
                     usage("examples.run", "hello-world", "-p", "message", says="-p 'message' is not key=value"),
                     usage("examples.run", "all", "-p", "a=b", says="-p applies to one example"),
                     usage("examples.run", says="'name'"),
                     usage("examples.run", "--bogus", says="not '--bogus'"),
                     wrong_type("examples.run", "hello-world", "--timeout")],
    "examples.all": [no_cluster("examples.all"), no_kubeconfig("examples.all"),
                     wrong_type("examples.all", "--timeout")],
    "examples.webhook": [no_cluster("examples.webhook"), no_kubeconfig("examples.webhook"),
                         wrong_type("examples.webhook", "--timeout")],
    "examples.clean": [no_cluster("examples.clean", "--yes"),
                       no_kubeconfig("examples.clean", "--yes"),
                       broken_kubeconfig("examples.clean", "--yes"),
                       usage("examples.clean", says=NO_YES)],
    "tools.install": [usage("tools.install", "--only", "kubectl,nope", says="unknown tool(s): nope")],
}
CASES = [case for cases in BAD_INPUT.values() for case in cases]


def _listed_tasks() -> set[str]:
    ran = subprocess.run([sys.executable, "-m", "etlboot", "--list", "--list-format=json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    names: set[str] = set()

    def walk(collection: dict, prefix: str) -> None:
        names.update(prefix + t["name"] for t in collection["tasks"])
        for child in collection["collections"]:
            walk(child, f"{prefix}{child['name']}.")

    walk(json.loads(ran.stdout), "")
    return names


def test_the_table_covers_every_task():
    assert sorted(_listed_tasks()) == sorted(BAD_INPUT)
    assert all(BAD_INPUT.values())


def test_every_number_flag_of_every_task_has_a_wrong_type_row():
    from tasks import ns

    def flags(collection, prefix=""):
        for name, task in collection.tasks.items():
            for argument in task.get_arguments():
                if argument.kind in (int, float):
                    yield prefix + name, "--" + argument.name.replace("_", "-")
        for name, child in collection.collections.items():
            yield from flags(child, f"{prefix}{name}.")

    wanted = set(flags(ns))
    rows = {(case.argv[0], case.argv[-2]) for case in CASES if case.argv[-1] == "abc"}
    assert wanted and wanted <= rows, sorted(wanted - rows)


# -- the worlds --------------------------------------------------------------------------------------------------


@dataclass
class Ran:
    code: int
    out: str
    err: str
    changed: list[str]
    values: dict[str, str]


class Worlds:
    """What every case shares: a port where nothing listens, the stand-ins, moto as AWS."""

    def __init__(self, tmp: Path, moto_endpoint: str):
        self.tmp = tmp
        # bound, never listening: a connection is refused, and no other test can take the port meanwhile
        self.dead = socket.socket()
        self.dead.bind(("127.0.0.1", 0))
        self.server = f"https://127.0.0.1:{self.dead.getsockname()[1]}"
        self.kubeconfig = tmp / "kubeconfig"
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "bad-input",
            "clusters": [{"name": "bad-input", "cluster": {"server": self.server, "insecure-skip-tls-verify": True}}],
            "users": [{"name": "bad-input", "user": {"token": KUBE_TOKEN}}],
            "contexts": [{"name": "bad-input", "context": {"cluster": "bad-input", "user": "bad-input"}}]}))
        self.broken = tmp / "broken-kubeconfig"
        self.broken.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "bad-input", "clusters": [], "users": [],
            "contexts": [{"name": "bad-input", "context": {"cluster": "gone", "user": "gone"}}]}))
        self.bin = standins_bin(tmp / "bin")
        self.moto = f"http://{moto_endpoint}"
        # the project as a checkout has it (not the developer's .env or build/), compiled once: every case
        # starts from a copy of it, and the interpreters need not compile the tool's modules each time
        self.template = tmp / "template"
        shutil.copytree(ROOT, self.template, ignore=lambda folder, names: [
            n for n in names if n in NOT_THE_PROJECT or (Path(folder) == ROOT and n in (".env", "build"))])
        for part in ("etlboot", "aws", "tasks.py"):
            path = self.template / part
            compileall.compile_dir(path, quiet=1) if path.is_dir() else compileall.compile_file(path, quiet=1)

    def close(self) -> None:
        self.dead.close()

    def environ(self, world: str, home: Path) -> dict[str, str]:
        from etlboot.config import BY_NAME

        env = {k: v for k, v in os.environ.items()
               if k not in BY_NAME and not k.startswith(("AWS_", "STANDIN_", "ETLBOOT_", "KUBE"))}
        env.update({
            "HOME": str(home), "PATH": f"{self.bin}{os.pathsep}{env.get('PATH', '')}", "ETLBOOT_LAUNCHER": "./etl",
            "PYTHONDONTWRITEBYTECODE": "1", "STANDIN_STATE_DIR": str(home / "standins"),
            "STANDIN_KUBE_URL": self.server, "CLUSTER": "existing", "KUBE_CONTEXT": "bad-input",
            "ETL_IMAGE": "example.org/etl:1", "WAIT_TIMEOUT_SECONDS": "5",
            "REQUEST_TIMEOUT_SECONDS": "3", "KUBECONFIG": str(self.kubeconfig),
            "AWS_CONFIG_FILE": "/nonexistent/aws-config", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
            "AWS_EC2_METADATA_DISABLED": "true",
        })
        if world.endswith("no-kubeconfig"):
            env["KUBECONFIG"] = str(home / "nowhere" / "config")
        if world == "broken-kubeconfig":
            env["KUBECONFIG"] = str(self.broken)
        if world.startswith("aws-") and world != "aws-unset":
            env.update({"AWS_ENDPOINT_URL": self.moto, "AWS_REGION": "eu-west-1", "AWS_BUCKET": "etl-bad-input",
                        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
                        "AWS_MAX_ATTEMPTS": "1", "SNS_WEBHOOK_URL": "https://sns.example.com:12000",
                        "SNS_WEBHOOK_PATH": WEBHOOK_PATH})
        return env

    def run(self, case: Case, index: int) -> Ran:
        home = self.tmp / f"case-{index}"
        project, files = home / "project", home / "files"
        shutil.copytree(self.template, project)
        files.mkdir()
        (files / "a-file").write_text("a file, not a folder\n")
        (files / "photo.csv").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
        (files / "notes.txt").write_text("no,name,score\n1,a,2\n")
        env = self.environ(case.world, home)
        argv = [part.replace(FILES_MARK, str(files)) for part in case.argv]
        before = snapshot(project)
        ran = subprocess.run([sys.executable, "-m", "etlboot", *argv], cwd=project, env=env, capture_output=True,
                             text=True, timeout=60, stdin=subprocess.DEVNULL)
        after = snapshot(project)
        changed = sorted(path for path in before.keys() | after.keys() if before.get(path) != after.get(path))
        values = {"server": self.server, "kubeconfig": env["KUBECONFIG"], "files": str(files)}
        return Ran(ran.returncode, ran.stdout, ran.stderr, changed, values)


def snapshot(project: Path) -> dict[str, tuple[int, int]]:
    """Every file of the project (not the venv, caches, tools, bytecode): its mtime and size."""
    files = {}
    for folder, dirs, names in os.walk(project):
        dirs[:] = [d for d in dirs if d not in NOT_THE_PROJECT]
        for name in names:
            stat = os.stat(os.path.join(folder, name))
            files[os.path.relpath(os.path.join(folder, name), project)] = (stat.st_mtime_ns, stat.st_size)
    return files


@pytest.fixture(scope="module")
def worlds(tmp_path_factory, moto_endpoint):
    made = Worlds(tmp_path_factory.mktemp("bad-input"), moto_endpoint)
    yield made
    made.close()


@pytest.fixture(scope="module")
def outcomes(worlds):
    """case id -> a future of its run. Alone, every case starts at once on a thread pool (each is mostly an
    interpreter starting up); under xdist, each only when its test asks."""
    workers = 1 if os.environ.get("PYTEST_XDIST_WORKER") else max(2, len(os.sched_getaffinity(0)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        if workers == 1:
            yield _Lazy(lambda case: pool.submit(worlds.run, case, CASES.index(case)))
        else:
            yield {case.id: pool.submit(worlds.run, case, index) for index, case in enumerate(CASES)}


class _Lazy(dict):
    def __init__(self, start):
        super().__init__()
        self.start = start

    def __missing__(self, key):
        case = next(c for c in CASES if c.id == key)
        self[key] = self.start(case)
        return self[key]


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in CASES])
def test_bad_input_is_one_line_naming_the_cause(outcomes, case):
    ran = outcomes[case.id].result()
    output = ran.out + ran.err
    assert "Traceback" not in ran.out and "Traceback" not in ran.err, output
    assert not [secret for secret in SECRETS if secret in output], output
    assert ran.code == case.code, output
    errors = [line for line in output.splitlines() if line.lstrip().startswith(ERROR)]
    assert len(errors) == 1, output
    for fragment in case.says:
        assert fragment.format(**ran.values) in errors[0], output
    assert ran.changed == [], f"{ran.changed}\n{output}"


def test_with_debug_the_traceback_comes_before_the_same_one_line(worlds):
    ran = worlds.run(no_cluster("ui", "--show-token", "--debug"), len(CASES))
    output = ran.out + ran.err
    assert ran.code == 1 and "Traceback (most recent call last)" in output, output
    (line,) = [line for line in output.splitlines() if line.startswith(ERROR)]
    assert output.index("Traceback") < output.index(line) and "Connection refused" in line


# -- shell completion, through the program `./etl` runs ----------------------------------------------------------


def test_completion_calls_the_program_as_typed_and_lists_tasks_and_flags(tmp_path):
    launcher = tmp_path / "etl"  # stands for ./etl: what it execs, without setting up a venv
    launcher.write_text(f"#!/bin/sh\ncd '{ROOT}' && exec '{sys.executable}' -m etlboot \"$@\"\n")
    launcher.chmod(0o755)
    script = subprocess.run([str(launcher), "--print-completion-script", "bash"], capture_output=True, text=True,
                            timeout=60)
    assert script.returncode == 0 and '"${COMP_WORDS[0]}" --complete' in script.stdout, script
    (tmp_path / "etl.bash").write_text(script.stdout)
    probe = ('source ./etl.bash; complete -p ./etl >/dev/null || exit 3\n'
             'for line in "./etl |" "./etl examples.r|examples.r" "$PWD/etl demo.upload --t|--t"; do\n'
             '  COMP_WORDS=(${line%|*}); current=${line#*|}; [ -z "$current" ] && COMP_WORDS+=("")\n'
             '  _complete_etl ./etl "$current"; echo "${COMPREPLY[*]}"\n'
             'done\n')
    ran = subprocess.run(["bash", "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran
    every, partial, flags = ran.stdout.splitlines()
    assert {"up", "status", "demo.upload", "aws.setup", "examples.run"} <= set(every.split())
    assert partial.split() == ["examples.run"]
    assert set(flags.split()) == {"--target", "--timeout"}


def test_a_tab_press_through_etl_starts_the_program_once_and_checks_no_venv(tmp_path):
    """`./etl --complete ...` (what the completion script runs on every Tab) execs the program at once when the
    venv is there: no pip, no requirement hashing (1.15 s a Tab before, 0.46 s after on this machine)."""
    import shutil

    shutil.copy(ROOT / "etl", tmp_path / "etl")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = []\n')
    calls = tmp_path / "calls.log"
    fake = tmp_path / ".venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text(f'#!/bin/sh\necho "$*" >> "{calls}"\necho up\n')
    fake.chmod(0o755)
    ran = subprocess.run(["bash", str(tmp_path / "etl"), "--complete", "--", "./etl", ""], capture_output=True,
                         text=True, timeout=60)
    assert ran.returncode == 0 and ran.stdout == "up\n", ran
    assert calls.read_text().splitlines() == ["-m etlboot --complete -- ./etl "]
