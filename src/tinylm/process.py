"""This process's tie to its parent: on Linux, ask the kernel for a SIGTERM when the parent dies, so that a
killed launcher (`reproduce`'s grid, `torchrun`) leaves no workers training on."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None = None) -> bool:
    """SIGTERM to this process when `parent` (default: the current parent) dies; exits at once when it is
    already gone. Returns whether the request was made (Linux only)."""
    parent = os.getppid() if parent is None else parent
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request was made
        os._exit(1)
    return True
