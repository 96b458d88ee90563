"""Children that die with their parent, however the parent dies.

``abode up`` stops its children in order on Ctrl-C or SIGTERM; nothing runs in a
process killed with SIGKILL (or by the OOM killer), so the kernel must do it: Linux's
``PR_SET_PDEATHSIG`` sends the child a signal when its parent dies. SIGTERM lets a node
or router stop as it would on Ctrl-C (drain, flush, close RocksDB).

The signal is tied to the *thread* that started the child: start children from the
thread that lives as long as the parent (``abode up`` starts them all on its event
loop's thread), never from a worker thread that may end first.

Other systems have no such call; there children outlive a killed parent and the next
``abode up`` on the same data dir stops them (see ``upstate``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1

__all__ = ["die_with_parent"]


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen`` (None where unsupported)."""
    if sys.platform != "linux":
        return None
    # Looked up now, in the parent: the child between fork and exec should only call.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:
            # The parent died between fork and prctl: nobody would signal us.
            os._exit(1)

    return preexec
