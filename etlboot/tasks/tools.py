"""`invoke tools.install`: pinned, checksum-verified kubectl, helm and minikube in TOOLS_DIR."""

from __future__ import annotations

from invoke import Collection, Exit

from ..cli import COMMON_HELP, interruptible, load_settings, task, usage_error
from ..report import Reporter
from ..shell import INSTALLABLE, tools_dir


@task(help={"only": "comma-separated subset of kubectl,helm,minikube", "force": "download even if installed",
            "debug": COMMON_HELP["debug"]}, name="install")
@interruptible
def install(c, only="", force=False, debug=False):
    """Download pinned, checksum-verified kubectl, helm and minikube into TOOLS_DIR (default .bin)."""
    from ..toolinstall import install as do_install

    names = [n.strip() for n in only.split(",") if n.strip()] or list(INSTALLABLE)
    unknown = [n for n in names if n not in INSTALLABLE]
    if unknown:
        raise usage_error(f"unknown tool(s): {', '.join(unknown)} (choose from {', '.join(INSTALLABLE)})")
    settings = load_settings()
    reporter = Reporter()
    results = do_install(names, tools_dir(settings), force=force, reporter=reporter.say)
    failed = [r for r in results if r.outcome == "failed"]
    for r in results:
        reporter.say(f"{'✗' if r.outcome == 'failed' else '✓'} {r.name:<9} {r.version:<10} {r.outcome}: {r.detail}")
    if failed:
        raise Exit(code=1)


ns = Collection("tools")
ns.add_task(install)
