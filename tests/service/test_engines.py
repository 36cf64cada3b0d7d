"""The engine contract, once for both backends, and the two backends against each other."""

from __future__ import annotations

import itertools
import logging
import random
from pathlib import Path

import pytest
import torch

from model.checkpoint import model_hash
from model.data import read_lines
from model.search import beam_search
from service.engine.base import Engine, Translation, share_cost, stream_shares
from service.engine.loader import load_engine
from service.engine.onnx_engine import OnnxEngine
from service.engine.ort_session import cuda_available


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exported graphs go to a session directory, never into the repository's artifacts/
    (passed to each load, not set in the environment, which the later tests would see)."""
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session", params=["torch", "onnx"])
def engine(request: pytest.FixtureRequest, tiny_model_dir: Path, artifacts_dir: Path) -> Engine:
    return load_engine(tiny_model_dir, backend=request.param, artifacts_root=artifacts_dir)


@pytest.fixture(scope="session")
def engines(tiny_model_dir: Path, artifacts_dir: Path) -> dict[str, Engine]:
    return {
        backend: load_engine(tiny_model_dir, backend=backend, artifacts_root=artifacts_dir)
        for backend in ("torch", "onnx")
    }


@pytest.fixture(scope="session")
def texts(data_dir: Path) -> list[str]:
    return read_lines(data_dir, "test_2016_flickr", "en")[:10]


def test_translate_returns_one_translation_per_text(engine: Engine, texts: list[str]) -> None:
    out = engine.translate(texts, beam_size=2, max_length=12)
    assert len(out) == len(texts)
    for t in out:
        assert isinstance(t, Translation)
        assert isinstance(t.text, str) and t.tokens and len(t.tokens) <= 12
        assert t.text == engine.tokenizer.decode([t.tokens])[0]
        assert t.alternatives == []


def test_engine_describes_itself(engine: Engine, tiny_model_dir: Path) -> None:
    assert engine.backend in ("torch", "onnx")
    assert (engine.device, engine.precision) == ("cpu", "fp32")
    assert (engine.pair, engine.source_lang, engine.target_lang) == ("en-de", "en", "de")
    assert engine.version == model_hash(tiny_model_dir)


@pytest.mark.parametrize("num_alternatives", [1, 3])
def test_alternatives_are_the_next_best(
    engine: Engine, texts: list[str], num_alternatives: int
) -> None:
    out = engine.translate(texts[:3], beam_size=4, max_length=10, num_alternatives=num_alternatives)
    for t in out:
        assert len(t.alternatives) == num_alternatives
        scores = [t.score] + [a.score for a in t.alternatives]
        assert scores == sorted(scores, reverse=True)


def test_beam_one_is_greedy(engine: Engine, texts: list[str]) -> None:
    """Beam search with one beam and no length penalty (which steps through select) is greedy."""
    sources = engine.tokenizer.encode(texts)
    greedy = engine.generate(sources, beam_size=1, max_length=15)
    beam = beam_search(
        engine,
        engine.start(sources),
        len(sources),
        beam_size=1,
        bos_id=engine.bos_id,
        eos_id=engine.eos_id,
        max_length=15,
        alpha=0.0,
    )
    assert [h[0].tokens for h in greedy] == [h[0].tokens for h in beam]


def test_select_keeps_rows_consistent_with_a_fresh_batch(engine: Engine, texts: list[str]) -> None:
    sources = engine.tokenizer.encode(texts[:4])
    bos = torch.full((4,), engine.bos_id)
    _, state = engine.step(engine.start(sources), bos)
    # rows 2, 0, 0 decode source entries 2 and 0: groups of unequal size, so each row is
    # its own entry
    state = engine.select(state, torch.tensor([2, 0, 0]), torch.tensor([2, 0, 0]))
    tokens = torch.tensor([5, 6, 7])
    got, _ = engine.step(state, tokens)
    _, fresh = engine.step(engine.start([sources[2], sources[0], sources[0]]), bos[:3])
    want, _ = engine.step(fresh, tokens)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert got.dtype == torch.float32 and got.shape == (3, engine.tokenizer.vocab_size)


def test_step_top_k_is_the_top_k_of_step(engine: Engine, texts: list[str]) -> None:
    """What the search takes from a step (the graph's own TopK on the onnx engine): each row's
    k best log-probabilities of the full step, largest first; k = 1 is the argmax."""
    sources = engine.tokenizer.encode(texts[:5])
    bos = torch.full((5,), engine.bos_id)
    log_probs, _ = engine.step(engine.start(sources), bos)
    for k in (1, 4, 8):
        values, tokens, state = engine.step_top_k(engine.start(sources), bos, k)
        want_tokens = torch.sort(log_probs, dim=-1, descending=True, stable=True)[1][:, :k]
        assert torch.equal(tokens, want_tokens)
        torch.testing.assert_close(values, log_probs.gather(1, want_tokens), atol=1e-6, rtol=0)
        assert values.dtype == torch.float32 and tokens.dtype == torch.int64
    assert torch.equal(tokens[:, 0], log_probs.argmax(dim=-1))
    # the state goes on as step's does
    after_top_k, _ = engine.step(state, tokens[:, 0])
    after_step, _ = engine.step(engine.step(engine.start(sources), bos)[1], tokens[:, 0])
    torch.testing.assert_close(after_top_k, after_step, atol=1e-5, rtol=0)


def test_select_into_beam_groups_matches_one_row_per_source(
    engine: Engine, texts: list[str]
) -> None:
    """Rows expanded into groups (beams of a sentence) decode as a batch of separate copies."""
    sources = engine.tokenizer.encode(texts[:2])
    state = engine.select(
        engine.start(sources), torch.tensor([1, 1, 1, 0, 0, 0]), torch.tensor([1, 0])
    )
    tokens = torch.full((6,), engine.bos_id)
    got, state = engine.step(state, tokens)
    reorder = torch.tensor([2, 0, 1, 5, 5, 3])
    got, _ = engine.step(engine.select(state, reorder, None), tokens)
    fresh = engine.start([sources[1]] * 3 + [sources[0]] * 3)
    _, fresh = engine.step(fresh, tokens)
    want, _ = engine.step(engine.select(fresh, reorder, None), tokens)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_empty_text_translates(engine: Engine) -> None:
    assert len(engine.translate(["", "a"], beam_size=2, max_length=5)) == 2


def test_warmup_runs(engine: Engine) -> None:
    engine.warmup()


@pytest.mark.parametrize("beam_size", [1, 4])
def test_backends_produce_the_same_tokens(
    engines: dict[str, Engine], texts: list[str], beam_size: int
) -> None:
    texts = [*texts, ""]  # an empty source is one padded slot: a fully masked row
    outputs = {
        name: [t.tokens for t in e.translate(texts, beam_size=beam_size, max_length=20)]
        for name, e in engines.items()
    }
    assert outputs["onnx"] == outputs["torch"]


def test_io_binding_path_matches_plain_feeds(engines: dict[str, Engine], texts: list[str]) -> None:
    """The IO-binding code CUDA uses, run on the CPU (device buffers are host memory here)."""
    plain = engines["onnx"]
    assert isinstance(plain, OnnxEngine)
    bound = OnnxEngine(
        plain.graphs,
        tokenizer=plain.tokenizer,
        source_lang="en",
        target_lang="de",
        version=plain.version,
        bos_id=plain.bos_id,
        eos_id=plain.eos_id,
        pad_id=plain.pad_id,
        max_positions=plain.max_positions,
        n_layers=2,
        io_binding=True,
    )
    for beam_size in (1, 3):
        want = plain.translate(texts, beam_size=beam_size, max_length=15)
        got = bound.translate(texts, beam_size=beam_size, max_length=15)
        assert [t.tokens for t in got] == [t.tokens for t in want]
    # and the continuous scheduler's calls: joining and trimming ORT values
    sources = composition_sources(plain, texts)
    joins = [(0, [3, 0]), (1, [1]), (2, [7, 2]), (5, [4, 5, 6])]
    for width in (1, 3):
        assert decode_joining(bound, sources, width, joins) == decode_alone(plain, sources, width)


def test_int8_engine_translates(
    tiny_model_dir: Path, artifacts_dir: Path, texts: list[str]
) -> None:
    engine = load_engine(tiny_model_dir, precision="int8", artifacts_root=artifacts_dir)
    assert engine.precision == "int8"
    assert all(t.tokens for t in engine.translate(texts[:4], beam_size=2, max_length=8))


def test_cuda_request_falls_back_to_cpu(
    tiny_model_dir: Path, artifacts_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if cuda_available():
        pytest.skip("this machine has CUDA: the fallback does not happen")
    with caplog.at_level(logging.WARNING):
        engine = load_engine(
            tiny_model_dir, device="cuda", precision="fp16", artifacts_root=artifacts_dir
        )
    assert (engine.device, engine.precision) == ("cpu", "fp32")
    assert "CUDAExecutionProvider is not available" in caplog.text


def test_ctranslate2_peer_matches_torch_greedy(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The benchmark's CTranslate2 model is our checkpoint: same greedy tokens as PyTorch."""
    from bench.ctranslate2_model import convert
    from bench.engine_job import Job, run_job
    from model.checkpoint import load_model

    ct2_dir = convert(load_model(tiny_model_dir), tmp_path / "ct2")
    threads = torch.get_num_threads()  # run_job sets the process-wide count; put it back
    try:
        outputs = {
            (name, streams): run_job(
                Job(name, "fp32", 1, 8, str(tiny_model_dir), 16, 2, streams, str(ct2_dir), None)
            )
            for name, streams in (("torch", 1), ("ctranslate2", 1), ("ctranslate2", 2))
        }
    finally:
        torch.set_num_threads(threads)
    want = outputs["torch", 1]["outputs"]
    assert len(want) == 16
    assert outputs["ctranslate2", 1]["outputs"] == want
    assert outputs["ctranslate2", 2]["outputs"] == want  # sub-batches of 4, in parallel
    assert outputs["torch", 1]["seconds"] > 0 and outputs["torch", 1]["peak_delta_mib"] >= 0


def test_stream_shares_split_a_batch_into_balanced_shares() -> None:
    lengths = [5, 1, 9, 3, 7, 2, 8]
    shares = stream_shares(lengths, 3)
    assert sorted(i for share in shares for i in share) == list(range(len(lengths)))
    # contiguous runs of the length order: each share's sentences are all shorter than the next's
    runs = [[lengths[i] for i in share] for share in shares]
    assert all(max(a) <= min(b) for a, b in itertools.pairwise(runs))
    # equal lengths split into equal shares; shorter sentences go in larger shares
    assert [len(s) for s in stream_shares([6] * 8, 2)] == [4, 4]
    short, long = stream_shares(list(range(1, 33)), 2)
    assert len(short) > len(long) and min(long) > max(short)
    assert sorted(stream_shares(lengths, 1)[0]) == list(range(7))
    assert stream_shares([4, 2], 8) == [[1], [0]]


@pytest.mark.parametrize("overhead", [0, 4, 16])
@pytest.mark.parametrize("streams", [2, 3])
def test_stream_shares_minimize_the_largest_share_cost(streams: int, overhead: int) -> None:
    """Against every way of cutting the length order into at most `streams` runs, at each
    per-step overhead of the share cost (the default, 4, and two others)."""
    rng = random.Random(streams)
    for _ in range(50):
        lengths = [rng.randint(1, 40) for _ in range(rng.randint(2, 12))]
        ordered = sorted(lengths)

        def largest(runs: list[list[int]]) -> int:
            return max(share_cost(max(run), len(run), overhead) for run in runs)

        best = min(
            largest([ordered[a:b] for a, b in itertools.pairwise([0, *cuts, len(ordered)])])
            for count in range(streams)
            for cuts in itertools.combinations(range(1, len(ordered)), count)
        )
        shares = stream_shares(lengths, streams, overhead=overhead)
        assert len(shares) <= streams
        assert largest([[lengths[i] for i in share] for share in shares]) == best


@pytest.mark.parametrize("beam_size", [1, 3])
def test_streams_give_the_same_translations_as_one_batch(
    tiny_model_dir: Path, artifacts_dir: Path, texts: list[str], beam_size: int
) -> None:
    one = load_engine(tiny_model_dir, threads=1, streams=1, artifacts_root=artifacts_dir)
    three = load_engine(tiny_model_dir, threads=3, streams=3, artifacts_root=artifacts_dir)
    assert (one.streams, three.streams) == (1, 3)
    # an empty text too: its fully masked row attends evenly over zeroed padding, the same
    # whatever share of the batch it lands in
    texts = [*texts, "a", ""]
    want = one.translate(texts, beam_size=beam_size, max_length=15, num_alternatives=1)
    got = three.translate(texts, beam_size=beam_size, max_length=15, num_alternatives=1)
    assert [t.tokens for t in got] == [t.tokens for t in want]
    assert [[a.text for a in t.alternatives] for t in got] == [
        [a.text for a in t.alternatives] for t in want
    ]
    assert [t.score for t in got] == pytest.approx([t.score for t in want], abs=1e-4)


def test_available_cpus_honours_a_cgroup_quota(tmp_path: Path) -> None:
    import os

    from service.cpus import available_cpus

    cores = len(os.sched_getaffinity(0))
    assert available_cpus(tmp_path / "none") == cores
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) == cores
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert available_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text(f"{150000 * cores} 100000\n")
    assert available_cpus(tmp_path) == cores


# ----- continuous batching: a sentence decodes the same whatever shares its batch -----
def composition_sources(engine: Engine, texts: list[str]) -> list[list[int]]:
    # sources of different lengths, an empty one among them (a fully masked source row)
    return [*engine.tokenizer.encode(texts[:7]), []]


def decode_alone(engine: Engine, sources: list[list[int]], width: int) -> list[list[object]]:
    out = []
    for s in sources:
        batch = engine.new_batch(engine.sentences([s], max_length=14, num_alternatives=1), width)
        ((_, hyps),) = batch.run()
        out.append([(h.tokens, round(h.score, 4)) for h in hyps])
    return out


def decode_joining(
    engine: Engine, sources: list[list[int]], width: int, joins: list[tuple[int, list[int]]]
) -> list[list[object]]:
    """A running batch that takes sentences (indices of sources) in at the given steps."""
    results: list[list[object]] = [[] for _ in sources]
    pending = sorted(joins)
    running = None
    step = 0
    while pending or (running is not None and running.sentences):
        while pending and pending[0][0] <= step:
            _, joining = pending.pop(0)
            chunk = engine.sentences(
                [sources[i] for i in joining], max_length=14, num_alternatives=1, owners=joining
            )
            fresh = engine.new_batch(chunk, width)
            done = fresh.widen() if width > 1 else []  # type: ignore[attr-defined]
            for owner, hyps in done:
                results[owner] = [(h.tokens, round(h.score, 4)) for h in hyps]
            if running is None:
                running = fresh
            else:
                running.concatenate(fresh)
        assert running is not None
        for owner, hyps in running.step():
            results[owner] = [(h.tokens, round(h.score, 4)) for h in hyps]
        step += 1
    return results


@pytest.mark.parametrize("width", [1, 3])
def test_a_sentence_decodes_the_same_alone_in_a_full_batch_and_joining_late(
    engine: Engine, texts: list[str], width: int
) -> None:
    """fp32, both backends, greedy and beam: tokens (and scores) of a sentence alone, in one
    full batch, and joining a running batch at steps 1, 2 and 5 (rows at other positions,
    sources of other lengths) are the same."""
    sources = composition_sources(engine, texts)
    alone = decode_alone(engine, sources, width)
    full = decode_joining(engine, sources, width, [(0, list(range(len(sources))))])
    late = decode_joining(
        engine, sources, width, [(0, [3, 0]), (1, [1]), (2, [7, 2]), (5, [4, 5, 6])]
    )
    assert full == alone
    assert late == alone
    assert all(hyps for hyps in alone)


def test_filter_and_concatenate_keep_every_row_aligned(
    engines: dict[str, Engine], texts: list[str]
) -> None:
    """Random admissions, cancellations and retirements on running greedy and beam batches
    give each surviving sentence its offline tokens, on both backends (a property test)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    pool = [*texts, "A dog.", "", "Two men in red shirts play football on a green field."]

    @settings(
        max_examples=12,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        backend=st.sampled_from(["torch", "onnx"]),
        width=st.sampled_from([1, 2]),
        plan=st.lists(
            st.tuples(
                st.integers(0, 4),  # step at which this wave joins
                st.lists(st.integers(0, len(pool) - 1), min_size=1, max_size=4),
                st.integers(-1, 6),  # step at which one of them is cancelled (-1: never)
            ),
            min_size=1,
            max_size=4,
        ),
    )
    def check(backend: str, width: int, plan: list[tuple[int, list[int], int]]) -> None:
        engine = engines[backend]
        sources = engine.tokenizer.encode(pool)
        owners: list[tuple[int, int]] = []  # (wave, pool index) per sentence
        waves = []
        cancels: dict[int, list[object]] = {}
        for w, (at, picks, cancel_at) in enumerate(plan):
            items = [[w, p] for p in picks]  # lists: distinct objects, owners by identity
            owners += [(w, p) for p in picks]
            waves.append((at, items))
            if cancel_at >= 0:
                cancels.setdefault(cancel_at, []).append(items[0])
        got: dict[int, list[int]] = {}
        cancelled: set[int] = set()
        running = None
        step = 0
        pending = sorted(waves, key=lambda wave: wave[0])
        while pending or (running is not None and running.sentences):
            while pending and pending[0][0] <= step:
                _, items = pending.pop(0)
                chunk = engine.sentences(
                    [sources[p] for _, p in items], max_length=10, owners=items
                )
                fresh = engine.new_batch(chunk, width)
                finished = fresh.widen() if width > 1 else []  # type: ignore[attr-defined]
                for owner, hyps in finished:
                    got[id(owner)] = hyps[0].tokens
                if running is None:
                    running = fresh
                else:
                    running.concatenate(fresh)
            if running is None:  # nothing admitted yet
                step += 1
                continue
            decoding = {id(o) for o in running.live_owners}
            gone = {id(o) for o in cancels.get(step, []) if id(o) in decoding}
            assert running.drop(gone) == len(gone)
            cancelled |= gone
            for owner, hyps in running.step():
                got[id(owner)] = hyps[0].tokens
            if width > 1:
                assert running.rows == running.sentences * width
            else:
                assert running.rows >= running.sentences == len(running.live_owners)
            step += 1
        offline = engine.generate(sources, beam_size=width, max_length=10)
        for _, items in waves:
            for item in items:
                if id(item) in cancelled:
                    assert id(item) not in got
                else:
                    assert got[id(item)] == offline[item[1]][0].tokens

    check()
