"""Steal time: CPU time a shared virtual machine's host gave to other guests.

On a cloud VM the hypervisor can take the cores away for a while; the guest sees it as
"steal" in /proc/stat. A benchmark that records it says how much of a slow figure was the
machine, not the code.
"""

from __future__ import annotations

from pathlib import Path

Reading = tuple[int, int]  # (stolen, total) jiffies


def cpu_jiffies() -> Reading:
    """(stolen, total) CPU time of the whole machine so far, from /proc/stat (Linux)."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0]
    except OSError:
        return 0, 0
    fields = [int(v) for v in first.split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user]
    total = sum(fields[:8])
    return (fields[7] if len(fields) > 7 else 0), total


def steal_percent(before: Reading, after: Reading) -> float:
    """Share of the machine's CPU time stolen between two readings, in percent."""
    total = after[1] - before[1]
    return 100.0 * (after[0] - before[0]) / total if total > 0 else 0.0
