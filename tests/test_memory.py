"""Resident-memory reading (transformer_mt.memory) against /proc/self/status."""

import torch

from transformer_mt.memory import resident_bytes


def vm_rss_from_status() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


def test_resident_bytes_matches_proc_status_and_sees_new_pages():
    rss = resident_bytes()
    assert rss is not None
    assert abs(rss - vm_rss_from_status()) < 8 * 2**20
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, written, so resident
    grown = resident_bytes()
    assert grown - rss > 48 * 2**20, (rss, grown)
    del block
