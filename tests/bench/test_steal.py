"""bench.toolkit's steal time of the host, read from /proc/stat."""

from __future__ import annotations

import sys

import pytest

from bench.toolkit import cpu_jiffies, steal_percent


def test_steal_percent_is_stolen_share_of_all_cpu_time() -> None:
    assert steal_percent((5, 1000), (15, 1100)) == pytest.approx(10.0)
    assert steal_percent((0, 0), (0, 0)) == 0.0  # no time passed: nothing was stolen


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat is Linux's")
def test_cpu_jiffies_reads_a_growing_counter() -> None:
    before = cpu_jiffies()
    sum(i * i for i in range(2_000_000))  # burn some CPU time so the counters move
    after = cpu_jiffies()
    assert 0 <= before[0] <= before[1]
    assert after[1] > before[1] and after[0] >= before[0]
    assert 0.0 <= steal_percent(before, after) <= 100.0
