"""Keep the app server's resident memory near what it really holds (glibc's allocator).

Heatmaps allocate a few hundred MB for a moment (masked copies of the input,
backward passes), each session from its own thread. glibc then keeps the freed
memory: every thread may get its own heap ("arena"), and after a large block
is freed glibc raises the size above which it maps memory directly, so later
large tensors land in heaps that never shrink. The server's RSS only grows.
So the app (1) caps the arenas and pins the direct-mapping threshold, which
makes large tensors go back to the system when freed, and (2) trims the heaps
after each heatmap and page run. Measured by ``python -m lungct lab bench-app memory``.
Elsewhere than glibc (macOS, musl) both are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 16 << 20
"""Blocks of 16 MB and more are mapped directly and unmapped when freed (ScoreCAM's
masked batches and upsampled maps). Smaller ones, a forward pass's activations, stay in
the heap, where reuse costs no page faults: at 1 MB a batch-1 forward of the student
took about 90 ms of CPU instead of 50."""
ARENAS = 2


@functools.lru_cache(maxsize=1)
def _glibc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018  (both exist only in glibc)
    except (OSError, AttributeError):
        return None
    return libc


@functools.lru_cache(maxsize=1)
def tune_allocator() -> bool:
    """Cap glibc's arenas and pin its mmap threshold, once per process; False if not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    ok = libc.mallopt(M_ARENA_MAX, ARENAS) == 1
    ok &= libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok &= libc.mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD) == 1
    return bool(ok)


def release_freed() -> bool:
    """Return the freed parts of every heap to the system (``malloc_trim``)."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
