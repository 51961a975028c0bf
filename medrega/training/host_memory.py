"""Keep freed host memory inside the process (glibc), so that CPU training steps do not page-fault.

glibc returns large freed blocks to the operating system (``munmap``, heap trimming); the next step's
tensors of the same sizes (a 32 MiB embedding gradient, the head's chunks, activations) then fault
every page in again. On the 2-core CPU machine that was 8,000-45,000 minor faults and 15-20% of each
training step of ``bench/train_step.py``. :func:`keep_freed_memory` raises glibc's thresholds so that
freed memory is reused instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
MAX_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's ceiling on 64-bit systems; larger blocks are always mapped
TRIM_THRESHOLD = 1024**3
TOP_PAD = 64 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Make glibc keep freed blocks of up to 32 MiB and up to 1 GiB of free heap top in the process.

    Process-wide and permanent (the process's resident memory stays near its peak, as with a caching
    allocator). Returns ``False`` where it cannot apply: not Linux, or a C library without glibc's
    ``mallopt`` (musl).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    settings = ((_M_MMAP_THRESHOLD, MAX_MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD))
    return all(mallopt(option, value) == 1 for option, value in settings)
