"""The engine benchmark's report: which rows it compares against which targets, per device."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from bench.engines import Row, ratios, render


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


def test_step_top_k_benchmark_compares_both_paths(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """bench.step_top_k runs the graph's TopK and the host top-k on one engine: same tokens."""
    from bench.step_top_k import main

    main(["--model", str(tiny_model_dir), "--limit", "8", "--batch1-limit", "2", "--threads", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| fp32")]
    assert len(rows) == 4
    assert all(row.endswith("| 100.0% |") for row in rows)


def test_graphs_ab_runs_both_directories(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """bench.graphs_ab loads two graph directories as two engines; one export against a copy
    of itself gives the same tokens."""
    import shutil

    from bench.graphs_ab import main
    from export.artifacts import ensure_graphs

    a = ensure_graphs(tiny_model_dir, "fp32", tmp_path / "artifacts").directory
    b = shutil.copytree(a, tmp_path / "copy")
    args = ["--model", str(tiny_model_dir), "--limit", "8", "--batch", "4", "--rounds", "1"]
    main([str(a), str(b), *args, "--threads", "1"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| fp32")]
    assert [row.split(" | ")[1] for row in rows] == ["1", "4"]
    assert all(row.endswith("| 100.0% |") for row in rows)


def test_greedy_compaction_benchmark_keeps_fp32_tokens(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Dropping finished rows late changes no fp32 token (rows are independent there), and the
    benchmark puts the search's setting back."""
    import model.search
    from bench.greedy_compaction import main

    before = model.search.COMPACT_SHARE
    main(["--model", str(tiny_model_dir), "--limit", "12", "--batch", "6", "--rounds", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| fp32")]
    assert [row.split(" | ")[2] for row in rows] == ["0", "0.25", "0.5"]
    assert all(row.endswith("| 100.0% |") for row in rows)
    assert before == model.search.COMPACT_SHARE


def test_search_ab_loads_a_revisions_search(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """bench.search_ab runs model/search.py of a git revision beside the checked-out one, and
    puts the engine's search back."""
    import service.engine.base
    from bench.search_ab import main, search_at

    before = service.engine.base.search
    assert search_at("HEAD").search is not before  # a module of its own
    main(["--against", "HEAD", "--model", str(tiny_model_dir), "--limit", "8", "--batch", "4"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| fp32")]
    assert [row.split(" | ")[1] for row in rows] == ["1", "4"]
    assert all(row.endswith("| 100.0% |") for row in rows)
    assert service.engine.base.search is before


def test_stream_split_keeps_fp32_tokens_and_puts_the_split_back(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """bench.stream_split: dealt and balanced shares give the same fp32 tokens (rows are
    independent there), and the engine's split and its overhead are put back."""
    import service.engine.base as engine_base
    from bench.stream_split import dealt, main

    before = engine_base.stream_shares, engine_base.SHARE_STEP_OVERHEAD
    assert dealt([5, 1, 9, 3], 2) == [[1, 0], [3, 2]]
    args = ["--model", str(tiny_model_dir), "--limit", "12", "--batch", "6", "--rounds", "1"]
    main([*args, "--threads", "2", "--overhead", "8"])
    out = capsys.readouterr().out
    assert out.startswith("2 streams")
    rows = [line for line in out.splitlines() if line.startswith("| fp32")]
    assert [row.split(" | ")[1] for row in rows] == ["1", "4"]
    assert all(row.endswith("| 100.0% |") for row in rows)
    use = [int(cell.split()[1].rstrip("%")) for cell in out.split("stream use: ")[1].split(", ")]
    assert all(0 < u <= 100 for u in use), use
    assert (engine_base.stream_shares, engine_base.SHARE_STEP_OVERHEAD) == before


def test_time_split_accounts_for_the_whole_run(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """bench.time_split: per round, the graphs' shares and the search's add up to the whole."""
    from bench.time_split import main

    main(["--model", str(tiny_model_dir), "--limit", "8", "--batch", "4", "--rounds", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line[:4] in ("| 1 ", "| 4 ")]
    assert len(rows) == 2
    for row in rows:
        shares = [float(cell.rstrip("%")) for cell in row.strip("| ").split(" | ")[4:]]
        assert shares[1] > 0  # the decoder ran
        assert sum(shares) == pytest.approx(100, abs=2)  # rounding of four shares


def test_decoder_profile_sums_kernel_time_by_op(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """bench.decoder_profile: every op type of the int8 decoder once, shares adding to 100%."""
    from bench.decoder_profile import main

    main(["--model", str(tiny_model_dir), "--rows", "6", "--group", "2", "--runs", "3"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    ops = [row.split(" | ")[0].lstrip("| ") for row in rows]
    assert any("Integer" in op or "Quantize" in op for op in ops), ops  # int8 products
    assert len(ops) == len(set(ops))
    shares = [float(row.split(" | ")[2].rstrip("%")) for row in rows]
    assert sum(shares) == pytest.approx(100, abs=0.1 * len(rows))
