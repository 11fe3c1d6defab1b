"""`./etl`: Invoke's program with this tool's name and version, and usage errors that exit 2.

`invoke up` works as well (tasks.py is an ordinary Invoke collection); `./etl` adds what people expect of a
CLI: `./etl --version` prints this tool's version, and a wrong flag or task name is a usage error (exit 2,
like every other usage error of the tool) instead of Invoke's exit 1.
"""

from __future__ import annotations

import sys
import tomllib

from invoke import Exit, Program
from invoke.exceptions import ParseError

from . import PROJECT_ROOT


def version() -> str:
    with open(PROJECT_ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["project"]["version"]


class EtlProgram(Program):
    def parse_core(self, argv):
        try:
            super().parse_core(argv)
        except ParseError as exc:
            raise Exit(f"✗ {exc}", code=2) from None

    def parse_tasks(self):
        try:
            super().parse_tasks()
        except ParseError as exc:
            raise Exit(f"✗ {exc} (`./etl --list` shows the tasks, `./etl --help TASK` their flags)", code=2) from None

    def print_version(self):
        import invoke

        print(f"argo-etl-bootstrap {version()} (Invoke {invoke.__version__})")


def main(argv: list[str] | None = None) -> None:
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))
    from tasks import ns  # the same collection `invoke` loads

    EtlProgram(name="argo-etl-bootstrap", binary="./etl", namespace=ns, version=version()).run(
        ["./etl", *(sys.argv[1:] if argv is None else argv)])
