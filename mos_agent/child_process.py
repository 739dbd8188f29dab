"""Child processes that do not outlive the process that started them.

A parent that is SIGKILLed, or dies of a SIGHUP when its terminal closes, runs no clean-up; its
children (the demo's simulators and broker) would run on, holding their ports. On Linux the
kernel can signal a child when its parent dies (``PR_SET_PDEATHSIG``): :func:`die_with_parent`
is the ``preexec_fn`` that asks for it. Elsewhere it does nothing (the parent's own clean-up on
SIGINT, SIGTERM and SIGHUP still stops them).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


# loaded in the parent: the child between fork and exec should do as little as it can
_libc = _load_libc()


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the child gets ``sig`` when the parent
    dies. None where the platform cannot do it.

    The kernel ties the signal to the *thread* that forked, so start such children from a
    thread that lives as long as the process (the main thread)."""
    if _libc is None:
        return None
    parent = os.getpid()
    libc = _libc

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), sig)

    return preexec
