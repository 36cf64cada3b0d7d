"""The load client: its request mix and loops in isolation, then against a running service."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtest.__main__ import main
from loadtest.report import latency_stats_ms
from loadtest.runner import RunConfig, run_load
from loadtest.sentences import load_sentences
from loadtest.workload import Workload, WorkloadConfig
from tests.service_helpers import clean_env, free_port, service_process

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SENTENCES = ["A man rides a bike.", "Two dogs play in the snow.", "A child eats an apple."]


def read_report(out: Path) -> dict[str, Any]:
    assert (out / "report.png").read_bytes().startswith(PNG_MAGIC)
    return json.loads((out / "report.json").read_text())


def assert_counts_add_up(report: dict[str, Any], total: int) -> None:
    requests = report["requests"]
    assert requests["total"] == total == len(report["samples"])
    assert sum(report["status_counts"].values()) == total
    assert requests["ok"] + requests["failed"] == total
    ok_samples = [s for s in report["samples"] if s[4] is None and 200 <= s[2] < 300]
    assert len(ok_samples) == requests["ok"]
    assert requests["texts_ok"] == sum(s[3] for s in ok_samples)


# ----- the parts, without a server -----


def test_sentences_are_read_from_plain_and_gzip_files(tmp_path: Path) -> None:
    plain = tmp_path / "s.txt"
    plain.write_text("one\n\n  two  \n", encoding="utf-8")
    packed = tmp_path / "s.txt.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as f:
        f.write("one\ntwo\n")
    assert load_sentences(plain) == load_sentences(packed) == ["one", "two"]
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="no sentences"):
        load_sentences(tmp_path / "empty.txt")


def test_workload_mixes_single_texts_and_batches() -> None:
    workload = Workload(SENTENCES, WorkloadConfig(batch_fraction=0.3, batch_size=5), seed=1)
    planned = [workload.next_request() for _ in range(1000)]
    batches = [p for p in planned if p.batched]
    assert 0.25 < len(batches) / len(planned) < 0.35
    assert all(isinstance(p.payload["text"], list) and 2 <= p.n_texts <= 5 for p in batches)
    assert all(isinstance(p.payload["text"], str) for p in planned if not p.batched)
    assert {p.path for p in planned} == {"/v1/translate"}


def test_libretranslate_requests_carry_the_key_in_the_body() -> None:
    config = WorkloadConfig(route="libre", batch_fraction=1.0, batch_size=3, api_key="k")
    workload = Workload(SENTENCES, config)
    planned = workload.next_request()
    assert planned.path == "/translate"
    assert planned.payload["api_key"] == "k" and workload.headers() == {}
    assert planned.accepts({"translatedText": ["x"] * planned.n_texts})
    assert not planned.accepts({"translatedText": "x"})
    assert Workload(SENTENCES, WorkloadConfig(api_key="k")).headers() == {
        "Authorization": "Bearer k"
    }


def test_latency_percentiles() -> None:
    stats = latency_stats_ms([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert stats["p50"] == pytest.approx(50.5)
    assert stats["p99"] == pytest.approx(99.01)
    assert stats["max"] == 100.0 and stats["min"] == 1.0
    assert latency_stats_ms([])["p95"] is None


def _echo_transport(in_flight: list[int], peak: list[int]) -> httpx.MockTransport:
    """A fake server answering every /v1 request after 5 ms, tracking concurrent requests."""

    async def handle(request: httpx.Request) -> httpx.Response:
        in_flight[0] += 1
        peak[0] = max(peak[0], in_flight[0])
        await asyncio.sleep(0.005)
        in_flight[0] -= 1
        text = json.loads(request.content)["text"]
        n = len(text) if isinstance(text, list) else 1
        return httpx.Response(200, json={"translations": [{"text": "x"}] * n})

    return httpx.MockTransport(handle)


def test_closed_loop_keeps_exactly_n_requests_in_flight() -> None:
    in_flight, peak = [0], [0]
    workload = Workload(SENTENCES, WorkloadConfig())
    config = RunConfig(url="http://fake", concurrency=3, requests=60)
    result = asyncio.run(run_load(workload, config, _echo_transport(in_flight, peak)))
    assert len(result.samples) == 60 and all(s.ok for s in result.samples)
    assert peak[0] == 3


def test_open_loop_sends_without_waiting_for_answers() -> None:
    """A server that answers nothing until every request of the run has arrived: an open
    loop gets all its answers; a client that waited for each answer would get none."""
    n = 40
    arrived: list[float] = []
    everyone = asyncio.Event()
    gave_up = []

    async def handle(request: httpx.Request) -> httpx.Response:
        arrived.append(time.perf_counter())
        if len(arrived) == n:
            everyone.set()
        if not gave_up:
            try:
                await asyncio.wait_for(everyone.wait(), timeout=20)
            except TimeoutError:
                gave_up.append(len(arrived))  # and the rest fail at once
        if gave_up:
            return httpx.Response(504, json={"error": f"{gave_up[0]} of {n} arrived"})
        return httpx.Response(200, json={"translations": [{"text": "x"}]})

    workload = Workload(SENTENCES, WorkloadConfig(batch_fraction=0.0))
    config = RunConfig(url="http://fake", mode="open", rate=2000.0, requests=n, seed=3)
    t0 = time.perf_counter()
    result = asyncio.run(run_load(workload, config, httpx.MockTransport(handle)))
    assert [s.status for s in result.samples] == [200] * n
    # Each request left when it was due, never before: the schedule is the one sent.
    due = sorted(t0 + s.start for s in result.samples)
    assert all(at >= when - 0.05 for at, when in zip(sorted(arrived), due, strict=True))


def test_open_loop_schedule_has_exponential_gaps_at_the_rate() -> None:
    """The arrival schedule itself (no clock involved): 1,000 gaps at 1,000/s."""
    workload = Workload(SENTENCES, WorkloadConfig())
    config = RunConfig(url="http://fake", mode="open", rate=1000.0, requests=1000, seed=3)
    in_flight, peak = [0], [0]
    result = asyncio.run(run_load(workload, config, _echo_transport(in_flight, peak)))
    starts = [s.start for s in result.samples]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    mean = sum(gaps) / len(gaps)
    # Exponential: the mean is 1 ms and the standard deviation equals the mean.
    assert mean == pytest.approx(1 / 1000, rel=0.1)
    sd = (sum((g - mean) ** 2 for g in gaps) / len(gaps)) ** 0.5
    assert sd == pytest.approx(mean, rel=0.15)
    assert peak[0] > 1  # answers took 5 ms, arrivals came every 1 ms


def test_unreachable_service_is_counted_as_errors(tmp_path: Path) -> None:
    sentences = tmp_path / "s.txt"
    sentences.write_text("\n".join(SENTENCES))
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    code = main(
        [
            "--url",
            url,
            "-n",
            "5",
            "-c",
            "2",
            "--sentences",
            str(sentences),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 1  # not one success
    report = read_report(tmp_path / "out")
    assert_counts_add_up(report, 5)
    assert report["status_counts"] == {"0": 5}
    assert report["errors"] == {"ConnectError": 5}


# ----- against the real service -----


@pytest.fixture(scope="module")
def service_url(
    tiny_models_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """`python -m service` on a free loopback port, serving the tiny models on PyTorch."""
    port = free_port()
    log = tmp_path_factory.mktemp("service") / "service.log"
    # No NMT_ variable or proxy of the caller's shell (an API key, say) leaks into the server.
    env = clean_env(
        models_dir=str(tiny_models_dir),
        backend="torch",
        device="cpu",
        threads="1",
        log_level="warning",
    )
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    with service_process(command, url, cwd=REPO, env=env, log=log, timeout=90):
        yield url


@pytest.fixture(scope="module")
def sentences_file(data_dir: Path) -> Path:
    return data_dir / "test_2016_flickr.en.gz"


@pytest.mark.slow
def test_closed_loop_against_the_service(
    service_url: str, sentences_file: Path, tmp_path: Path
) -> None:
    code = main(
        [
            "run",
            "--url",
            service_url,
            "--requests",
            "20",
            "--concurrency",
            "4",
            "--sentences",
            str(sentences_file),
            "--batch-fraction",
            "0.3",
            "--max-length",
            "12",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    report = read_report(tmp_path)
    assert_counts_add_up(report, 20)
    assert report["status_counts"] == {"200": 20} and report["errors"] == {}
    latency = report["latency_ms"]
    assert (
        0 < latency["p50"] <= latency["p90"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    )
    assert report["throughput"]["requests_per_s"] > 0
    assert report["requests"]["texts_ok"] > 20  # some requests were batches
    assert sum(b["requests_per_s"] for b in report["timeline"]["bins"]) * report["timeline"][
        "bin_s"
    ] == pytest.approx(20)


@pytest.mark.slow
def test_open_loop_and_libretranslate_route(
    service_url: str, sentences_file: Path, tmp_path: Path
) -> None:
    code = main(
        [
            "--url",
            service_url,
            "--mode",
            "open",
            "--rate",
            "20",
            "--requests",
            "12",
            "--route",
            "libre",
            "--sentences",
            str(sentences_file),
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    report = read_report(tmp_path)
    assert_counts_add_up(report, 12)
    assert report["status_counts"] == {"200": 12}


@pytest.mark.slow
def test_refused_requests_are_counted_by_status(
    service_url: str, sentences_file: Path, tmp_path: Path
) -> None:
    code = main(
        [
            "--url",
            service_url,
            "--requests",
            "6",
            "--target",
            "xx",
            "--sentences",
            str(sentences_file),
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 1
    report = read_report(tmp_path)
    assert_counts_add_up(report, 6)
    assert report["requests"]["ok"] == 0
    assert all(400 <= int(status) < 500 for status in report["status_counts"])


@pytest.mark.slow
def test_sweep_plots_throughput_against_p95(
    service_url: str, sentences_file: Path, tmp_path: Path
) -> None:
    code = main(
        [
            "sweep",
            "--url",
            service_url,
            "--levels",
            "1,3",
            "--requests",
            "6",
            "--max-length",
            "8",
            "--sentences",
            str(sentences_file),
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    assert [level["level"] for level in sweep["levels"]] == [1, 3]
    assert all(level["requests"]["ok"] == 6 for level in sweep["levels"])
    assert (tmp_path / "sweep.png").read_bytes().startswith(PNG_MAGIC)
    assert_counts_add_up(read_report(tmp_path / "level-3"), 6)


@pytest.mark.slow
@pytest.mark.requires_tool("locust")
def test_locustfile_runs_headless(service_url: str, sentences_file: Path, tmp_path: Path) -> None:
    locust = shutil.which(
        "locust", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if locust is None:  # a failure in CI (tests/conftest.py): it is in the dev extra
        pytest.skip("locust not installed (pip install -e '.[dev]')")
    run = subprocess.run(
        [
            locust,
            "-f",
            str(REPO / "loadtest" / "locustfile.py"),
            "--headless",
            "--users",
            "2",
            "--spawn-rate",
            "2",
            "--run-time",
            "3s",
            "--host",
            service_url,
            "--only-summary",
            "--sentences",
            str(sentences_file),
            "--csv",
            str(tmp_path / "locust"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Locust exits 1 when any request failed.
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    stats = (tmp_path / "locust_stats.csv").read_text()
    assert "/v1/translate [single]" in stats
