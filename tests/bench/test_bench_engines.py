"""The engine benchmark's report (which rows it compares against which targets, per device)
and the A/B tool on one engine."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from bench.engine_job import Row
from bench.engine_report import ratios, render


def row(engine: str, precision: str, beam: int, sent_per_s: float, **extra: object) -> Row:
    base = Row(
        engine=engine,
        precision=precision,
        beam=beam,
        batch=32,
        streams=1,
        sentences=320,
        seconds=320 / sent_per_s,
        cpu_seconds=1.0,
        sentences_per_s=sent_per_s,
        tokens_per_s=10 * sent_per_s,
        p50_batch_ms=10.0,
        steal_pct=0.0,
        rss_mib=500.0,
        peak_delta_mib=1.0,
        bleu=30.0,
    )
    return replace(base, **extra)  # type: ignore[arg-type]


def test_cpu_targets_compare_int8_with_int8() -> None:
    rows = [
        row("onnx", "fp32", 1, 300),
        row("onnx", "int8", 1, 500),
        row("ctranslate2", "fp32", 1, 250),
        row("ctranslate2", "int8", 1, 600),
        row("torch-nocache", "fp32", 1, 50),
    ]
    got = {(t["engine"], t["versus"]): (t["ratio"], t["met"]) for t in ratios(rows)}
    assert got == {
        ("onnx fp32", "ctranslate2 fp32"): (1.2, True),
        ("onnx int8", "ctranslate2 int8"): (0.83, False),
        ("onnx fp32", "torch-nocache fp32"): (6.0, True),
    }


def test_cuda_targets_compare_fp16_with_fp16_and_keep_each_engines_best_streams() -> None:
    rows = [
        row("onnx", "fp16", 4, 100),
        row("onnx", "fp16", 4, 150, streams=2),
        row("ctranslate2", "fp16", 4, 300),
        row("onnx", "int8", 4, 999),  # not a CUDA comparison
    ]
    (target,) = ratios(rows, "cuda")
    assert (target["engine"], target["versus"], target["engine_streams"]) == (
        "onnx fp16",
        "ctranslate2 fp16",
        2,
    )
    assert target["ratio"] == 0.5 and not target["met"]


def test_cuda_table_shows_gpu_memory_and_rows_that_could_not_run() -> None:
    rows = [row("onnx", "fp16", 1, 100, device="cuda", gpu_mib=1500.0, gpu_peak_mib=1700.0)]
    report = {
        "command": "python -m bench.engines --device cuda",
        "model": "models/en-de",
        "model_hash": "abc",
        "split": "test_2016_flickr",
        "source_lang": "en",
        "target_lang": "de",
        "sentences": 320,
        "batch1_sentences": 320,
        "machine": {
            "cpu": "x86",
            "logical_cores": 16,
            "threads": 16,
            "torch": "2",
            "onnxruntime": "1",
            "ctranslate2": "4",
            "device": "cuda",
            "gpu": "NVIDIA H100",
        },
        "ratios": [],
        "failed": ["CTranslate2 (needs libcublas.so.12)"],
    }
    text = render(rows, report)
    assert "GPU: NVIDIA H100" in text
    assert "| GPU MiB | GPU peak MiB |" in text
    assert "| 1500 | 1700 |" in text
    assert "Not measured: CTranslate2 (needs libcublas.so.12)" in text


def test_ab_compare_counts_the_sentences_whose_tokens_differ(
    tiny_model_dir: Path, artifacts_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """bench.ab's table: one row per beam, each side timed every round, and the identical
    share counted from the tokens (here B changes two of eight sentences)."""
    import argparse

    from bench.ab import compare, side
    from service.engine.loader import load_engine

    engine = load_engine(tiny_model_dir, threads=1, artifacts_root=artifacts_dir)
    sources = engine.encode_texts(["A dog runs.", "Two men talk.", "A red car."] * 3)[:8]
    a = side(engine, 4)

    def b(batch: list[list[int]], beam: int) -> list[list[int]]:
        out = a(batch, beam)
        return [[*t, 4] if i in (2, 5) else t for i, t in enumerate(out)]

    args = argparse.Namespace(precision="fp32", beams=[1, 2], batch=4, rounds=2)
    lines = compare(args, sources, {"A": a, "B": b})
    rows = [line for line in lines if line.startswith("| fp32")]
    assert [row.split(" | ")[1] for row in rows] == ["1", "2"]
    assert all(row.endswith("| 75.0% |") for row in rows), rows
    assert all(len(row.split(" | ")[3].split("-")) == 2 for row in rows)  # both rounds
    assert capsys.readouterr().out.count("| fp32") == 2


def test_ab_graphs_tells_two_exports_apart(
    tiny_models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bench.ab graphs`: an export against a copy of itself gives the same tokens; against
    the graphs of another model (same vocabulary and shapes, other weights) it does not."""
    import shutil

    from bench.ab import main
    from export.artifacts import ensure_graphs

    model = tiny_models_dir / "en-de"
    a = ensure_graphs(model, "fp32", tmp_path / "artifacts").directory
    copy = shutil.copytree(a, tmp_path / "copy")
    other = ensure_graphs(tiny_models_dir / "de-en", "fp32", tmp_path / "artifacts").directory
    args = ["--model", str(model), "--limit", "8", "--batch", "4", "--rounds", "1"]
    identical = {}
    for name, b in (("copy", copy), ("other", other)):
        main(["graphs", str(a), str(b), *args, "--threads", "1"])
        rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| fp32")]
        assert [row.split(" | ")[1] for row in rows] == ["1", "4"]
        identical[name] = [float(row.split(" | ")[-1].rstrip("% |")) for row in rows]
    assert identical["copy"] == [100.0, 100.0]
    assert all(share < 100.0 for share in identical["other"]), identical


def test_ab_search_runs_a_revisions_search_on_the_engine(
    tiny_model_dir: Path, artifacts_dir: Path
) -> None:
    """`bench.ab search`: model/search.py of a git revision, loaded as a module of its own,
    is the search the engine runs on side A (Engine.generate's search_fn), and at HEAD it
    decodes as the checked-out one."""
    import model.search
    from bench.ab import search_at, side
    from service.engine.loader import load_engine

    head = search_at("HEAD")
    assert head.search is not model.search.search
    calls: list[int] = []

    def counted(*args: object, **kwargs: object) -> list[list[model.search.Hypothesis]]:
        calls.append(1)
        return head.search(*args, **kwargs)

    engine = load_engine(tiny_model_dir, threads=1, streams=1, artifacts_root=artifacts_dir)
    sources = engine.encode_texts(["A dog runs in the snow.", "Two men talk.", "A red car."])
    for beam in (1, 3):
        calls.clear()
        assert side(engine, 2, counted)(sources, beam) == side(engine, 2)(sources, beam)
        assert len(calls) == 2  # one per batch of 2
