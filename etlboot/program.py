"""`./etl`: Invoke's program with this tool's name and version, and usage errors that exit 2.

`invoke up` works as well (tasks.py is an ordinary Invoke collection); `./etl` adds what people expect of a
CLI: `./etl --version` prints this tool's version, and a wrong flag or task name is a usage error (exit 2,
like every other usage error of the tool) instead of Invoke's exit 1.
"""

from __future__ import annotations

import os
import sys
import tomllib

from invoke import Exit, Program
from invoke.exceptions import ParseError

from . import PROJECT_ROOT


def version() -> str:
    with open(PROJECT_ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["project"]["version"]


#: how Invoke's completion script for each shell calls the program (`etl`, from PATH), and how ours does: as the
#: user typed it (`./etl`, or a path to it: this tool is on no PATH), handing it the words after the command
#: behind the name `etl`, which `--complete` strips (binary_names)
CALLED_AS = {
    "bash": ("`{binary} --complete -- ${{COMP_WORDS[*]}}`",
             '`"${{COMP_WORDS[0]}}" --complete -- {binary} ${{COMP_WORDS[*]:1}}`'),
    "zsh": ("$({binary} ${{=collection_arg}} --complete -- ${{words}})",
            "$(${{words[1]}} ${{=collection_arg}} --complete -- {binary} ${{words[2,-1]}})"),
    "fish": ("{binary} --complete -- (commandline --tokenize)",
             "eval (commandline --tokenize)[1] --complete -- {binary} (commandline --tokenize)[2..-1]"),
}


def completion_script(shell: str) -> str:
    """Invoke's completion script for `shell`, calling the program the way the user typed it."""
    from pathlib import Path

    import invoke.completion

    template = Path(invoke.completion.__file__).with_name(f"{shell}.completion").read_text()
    theirs, ours = CALLED_AS[shell]
    assert theirs in template, f"Invoke's {shell} completion script changed: update CALLED_AS"
    return template.replace(theirs, ours).format(binary="etl", spaced_names="etl ./etl")


class EtlProgram(Program):
    def parse_core_args(self) -> None:
        super().parse_core_args()
        shell = self.args["print-completion-script"].value
        if shell:
            if shell not in CALLED_AS:
                raise ParseError(f"no completion for {shell!r} (choose from {', '.join(CALLED_AS)})")
            print(completion_script(shell))
            raise Exit

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

    # binary_names: what `--complete` strips from the words it is given (the shells pass the command too)
    program = EtlProgram(name="argo-etl-bootstrap", binary="./etl", binary_names=["etl", "./etl"], namespace=ns,
                         version=version())
    try:
        program.run(["./etl", *(sys.argv[1:] if argv is None else argv)])
    except BrokenPipeError:
        # `./etl --list | head`: the reader left; say nothing more (Python's own advice: stdout to devnull)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)  # what a shell reports for SIGPIPE
