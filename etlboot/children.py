"""Child processes die with the tool, even when the tool is killed with SIGKILL.

A `kubectl port-forward` left behind keeps a local port bound to the cluster for ever. On Linux the kernel
sends the child SIGTERM when its parent dies (prctl PR_SET_PDEATHSIG); elsewhere a small watchdog process
polls the tool's pid and terminates the child once the tool is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1

WATCHDOG = """
import os, signal, sys, time
parent, child = int(sys.argv[1]), int(sys.argv[2])
while True:
    time.sleep(0.5)
    try:
        os.kill(child, 0)
    except OSError:
        sys.exit(0)          # the child ended first: nothing to watch
    try:
        os.kill(parent, 0)
    except OSError:
        try:
            os.kill(child, signal.SIGTERM)
        except OSError:
            pass
        sys.exit(0)
"""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def popen(argv: list[str], **kwargs) -> subprocess.Popen:
    """subprocess.Popen whose child does not outlive this process."""
    if sys.platform.startswith("linux"):
        return subprocess.Popen(argv, preexec_fn=_die_with_parent, **kwargs)
    child = subprocess.Popen(argv, **kwargs)
    subprocess.Popen([sys.executable, "-c", WATCHDOG, str(os.getpid()), str(child.pid)],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)
    return child
