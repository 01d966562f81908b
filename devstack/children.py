"""Child processes that die with their parent (Linux ``PR_SET_PDEATHSIG``).

Used by the embedded servers here and by the gateway's process supervisor, so a
killed supervisor, ``dev`` or test run leaves no process behind.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable


def die_with_parent() -> None:
    """Run in a child before exec (``preexec_fn``): get SIGTERM when the parent dies."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def child_preexec() -> Callable[[], None] | None:
    """:func:`die_with_parent` where it works (Linux), else nothing."""
    return die_with_parent if sys.platform.startswith("linux") else None
