"""``python die_with_parent.py PARENT_PID PROGRAM [ARGS...]``: exec PROGRAM so that it dies with its parent.

Linux's ``PR_SET_PDEATHSIG`` is kept across ``exec``, so Envoy gets SIGKILL the
moment the gateway dies, even when the gateway itself was SIGKILLed (the OOM
killer does that) and had no chance to stop it: no orphan Envoy is left holding
the REST and admin ports. A wrapper rather than ``preexec_fn``, which is unsafe
in a process with threads (gRPC's, the ESL link's); Python has no ``prctl`` of
its own, hence ctypes. It is run by path and imports only the standard library.

The signal follows the *thread* that started the child: start Envoy from the
event loop's thread, which lives as long as the gateway.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def wrap(program: list[str]) -> list[str]:
    """The command line that runs ``program`` so that it dies with this process (Linux only)."""
    if not sys.platform.startswith("linux"):
        return program
    return [sys.executable, "-I", os.path.abspath(__file__), str(os.getpid()), *program]


def main(argv: list[str]) -> int:
    if len(argv) < 3 or not argv[1].isdigit():
        print("usage: die_with_parent.py PARENT_PID PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    parent, program = int(argv[1]), argv[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        print(f"prctl(PR_SET_PDEATHSIG): {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 1
    if os.getppid() != parent:
        # The parent died before prctl took effect: no signal would ever come.
        print("die_with_parent: the parent is already gone", file=sys.stderr)
        return 1
    os.execv(program[0], program)  # noqa: S606 - the program and arguments are our own
    return 1  # not reached: execv replaces this process or raises


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
