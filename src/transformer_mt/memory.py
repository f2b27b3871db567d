"""How much memory this process holds resident, for the training log."""

from __future__ import annotations

import os


def resident_bytes() -> int | None:
    """Resident set size of this process in bytes; None where /proc is missing."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
