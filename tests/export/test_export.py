"""Export: the ONNX graphs of tiny random models against the PyTorch model they came from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.__main__ import main as export_main
from export.artifacts import GraphSet, _publish, ensure_graphs, export_graphs
from export.contract import GRAPH_FORMAT, MANIFEST_FILE, GraphNames
from model.checkpoint import LoadedModel, load_model, model_hash
from model.data import read_lines
from model.search import pad_batch
from model.transformer import KVCache
from service.engine.ort_session import make_session


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_dir: Path) -> LoadedModel:
    return load_model(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_graphs(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, GraphSet]:
    """fp32, int8 and fp16 graphs of the tiny en-de model, exported once per session."""
    out = tmp_path_factory.mktemp("graphs") / "en-de"
    return export_graphs(tiny_model_dir, out, ["fp32", "int8", "fp16"])


@pytest.fixture(scope="session")
def sources(tiny_loaded: LoadedModel, data_dir: Path) -> list[list[int]]:
    """Subword ids of 12 real test sentences."""
    return tiny_loaded.tokenizer.encode(read_lines(data_dir, "test_2016_flickr", "en")[:12])


def ort_session(path: Path) -> ort.InferenceSession:
    return make_session(path, "cpu", threads=1)


def torch_reference(
    model: torch.nn.Module, src_ids: torch.Tensor, src_mask: torch.Tensor, steps: int
) -> tuple[list[torch.Tensor], list[torch.Tensor], KVCache]:
    """Greedy decoding with decode_step: the tokens fed, the log-probs, and the final cache."""
    with torch.inference_mode():
        memory = model.encode(src_ids, src_mask)
        cache = model.empty_cache(memory)
        tokens = torch.full((src_ids.size(0), 1), model.config.bos_id)
        fed, log_probs = [], []
        for _ in range(steps):
            logits, cache = model.decode_step(tokens, None, src_mask, cache)
            fed.append(tokens)
            log_probs.append(torch.log_softmax(logits[:, -1], dim=-1))
            tokens = log_probs[-1].argmax(dim=-1, keepdim=True)
    return fed, log_probs, cache


def ort_decode(
    graphs: GraphSet, src_ids: torch.Tensor, src_mask: torch.Tensor, fed: list[torch.Tensor]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The same steps on ONNX Runtime: log-probs per step and the final per-layer cache."""
    encoder, decoder = ort_session(graphs.encoder), ort_session(graphs.decoder)
    names = GraphNames(len(encoder.get_outputs()) // 2)
    cross = encoder.run(None, {"src_ids": src_ids.numpy(), "src_mask": src_mask.numpy()})
    b, h, _, dh = cross[0].shape
    past = [np.zeros((b, h, 0, dh), dtype=cross[0].dtype)] * len(names.past)
    log_probs = []
    for step, tokens in enumerate(fed):
        feeds = {
            "tokens": tokens.numpy(),
            "positions": np.full(len(tokens), step, dtype=np.int64),
            "src_mask": src_mask.numpy(),
            **dict(zip(names.past, past, strict=True)),
            **dict(zip(names.cross, cross, strict=True)),
            "k": np.array([3]),
        }
        lp, top_values, top_tokens, *past = decoder.run(
            ["log_probs", "top_log_probs", "top_tokens", *names.present], feeds
        )
        # the graph's top-k outputs are the top-k of its own log-probabilities, ties to
        # the lower token id (float16 logits tie often)
        want = np.argsort(-lp.astype(np.float32), axis=-1, kind="stable")[:, :3]
        assert np.array_equal(top_tokens, want)
        assert np.array_equal(top_values, np.take_along_axis(lp, want, axis=-1))
        log_probs.append(lp)
    return log_probs, past


def test_export_writes_named_graphs_with_dynamic_axes(
    tiny_graphs: dict[str, GraphSet], tiny_model_dir: Path
) -> None:
    graphs = tiny_graphs["fp32"]
    names = GraphNames(2)
    manifest = graphs.manifest()
    assert manifest["model_hash"] == model_hash(tiny_model_dir)
    assert manifest["decoder"]["inputs"] == names.decoder_inputs
    decoder = onnx.load(str(graphs.decoder))
    inputs = {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        for i in decoder.graph.input
    }
    assert list(inputs) == names.decoder_inputs
    assert inputs["tokens"] == ["batch", 1]
    assert inputs["past_self_k_0"] == ["batch", 4, "past_len", 8]
    assert inputs["src_mask"] == ["sources", "src_len"]
    assert inputs["cross_v_1"] == ["sources", 4, "src_len", 8]
    assert [o.name for o in decoder.graph.output] == names.decoder_outputs
    encoder = onnx.load(str(graphs.encoder))
    assert [o.name for o in encoder.graph.output] == names.encoder_outputs


@pytest.mark.parametrize(("batch", "src_len"), [(1, 1), (7, 50), (7, 1), (1, 50)])
def test_graphs_match_torch_on_dynamic_shapes(
    tiny_graphs: dict[str, GraphSet], tiny_loaded: LoadedModel, batch: int, src_len: int
) -> None:
    torch.manual_seed(batch * 100 + src_len)
    lengths = [src_len] + [int(n) for n in torch.randint(1, src_len + 1, (batch - 1,))]
    seqs = [torch.randint(4, tiny_loaded.config.vocab_size, (n,)).tolist() for n in lengths]
    src_ids, src_mask = pad_batch(seqs, tiny_loaded.config.pad_id)
    fed, expected, cache = torch_reference(tiny_loaded.model, src_ids, src_mask, steps=6)
    got, past = ort_decode(tiny_graphs["fp32"], src_ids, src_mask, fed)
    for want, have in zip(expected, got, strict=True):
        np.testing.assert_allclose(have, want.numpy(), atol=1e-4)
    n = tiny_loaded.config.n_decoder_layers
    for layer in range(n):
        np.testing.assert_allclose(past[layer], cache.self_k[layer].numpy(), atol=1e-5)
        np.testing.assert_allclose(past[n + layer], cache.self_v[layer].numpy(), atol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_encoder_packs_real_tokens_and_zeroes_padding(
    tiny_graphs: dict[str, GraphSet], tiny_loaded: LoadedModel, precision: str
) -> None:
    """Padded batches, a source with no tokens among others, and one alone (no real token
    in the whole batch): the encoder graph gives the model's cross keys/values."""
    model, config = tiny_loaded.model, tiny_loaded.config
    encoder = ort_session(tiny_graphs[precision].encoder)
    torch.manual_seed(0)
    batches = [
        [torch.randint(4, config.vocab_size, (n,)).tolist() for n in (9, 3, 0, 6)],
        [[]],
    ]
    for seqs in batches:
        src_ids, src_mask = pad_batch(seqs, config.pad_id)
        with torch.inference_mode():
            k, v = model.cross_attention_kv(model.encode(src_ids, src_mask))
        got = encoder.run(None, {"src_ids": src_ids.numpy(), "src_mask": src_mask.numpy()})
        tolerance = 1e-5 if precision == "fp32" else 0.2
        for have, want in zip(got, [*k, *v], strict=True):
            np.testing.assert_allclose(have, want.numpy(), atol=tolerance)


def test_encoder_output_does_not_depend_on_padding(tiny_loaded: LoadedModel) -> None:
    """The model's own encoder: zero at padded positions, the same real positions however
    much padding the batch adds (so an empty source translates the same in any batch)."""
    model, config = tiny_loaded.model, tiny_loaded.config
    seq = torch.randint(4, config.vocab_size, (5,)).tolist()
    with torch.inference_mode():
        alone = model.encode(*pad_batch([seq], config.pad_id))
        ids, mask = pad_batch([seq, [], [7] * 11], config.pad_id)
        padded = model.encode(ids, mask)
    torch.testing.assert_close(padded[0, :5], alone[0], atol=1e-5, rtol=0)
    assert not padded[~mask].any()


def test_greedy_tokens_identical_to_torch(
    tiny_graphs: dict[str, GraphSet], tiny_loaded: LoadedModel, sources: list[list[int]]
) -> None:
    src_ids, src_mask = pad_batch(sources, tiny_loaded.config.pad_id)
    fed, expected, _ = torch_reference(tiny_loaded.model, src_ids, src_mask, steps=20)
    got, _ = ort_decode(tiny_graphs["fp32"], src_ids, src_mask, fed)
    assert [lp.argmax(-1).tolist() for lp in got] == [lp.argmax(-1).tolist() for lp in expected]


def test_int8_graph_is_quantized_and_close(
    tiny_graphs: dict[str, GraphSet], tiny_loaded: LoadedModel, sources: list[list[int]]
) -> None:
    ops = {n.op_type for n in onnx.load(str(tiny_graphs["int8"].decoder)).graph.node}
    assert ops & {"DynamicQuantizeMatMul", "MatMulInteger", "MatMulIntegerToFloat"}
    src_ids, src_mask = pad_batch(sources, tiny_loaded.config.pad_id)
    fed, expected, _ = torch_reference(tiny_loaded.model, src_ids, src_mask, steps=5)
    got, _ = ort_decode(tiny_graphs["int8"], src_ids, src_mask, fed)
    assert max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected, strict=True)) < 0.5


def test_fp16_graph_keeps_float32_log_probs(
    tiny_graphs: dict[str, GraphSet], tiny_loaded: LoadedModel, sources: list[list[int]]
) -> None:
    """fp16 is for CUDA; ORT's CPU kernels still run it, enough to check types and closeness."""
    graphs = tiny_graphs["fp16"]
    types = {i.name: i.type for i in ort_session(graphs.decoder).get_inputs()}
    assert types["past_self_k_0"] == "tensor(float16)"
    assert types["cross_v_0"] == "tensor(float16)"
    src_ids, src_mask = pad_batch(sources[:4], tiny_loaded.config.pad_id)
    fed, expected, _ = torch_reference(tiny_loaded.model, src_ids, src_mask, steps=4)
    got, past = ort_decode(graphs, src_ids, src_mask, fed)
    assert got[0].dtype == np.float32 and past[0].dtype == np.float16
    assert (
        max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected, strict=True)) < 0.05
    )


@pytest.mark.parametrize("precision", ["fp32", "int8", "fp16"])
def test_select_graphs_take_rows_as_the_decoder_types_them(
    tiny_graphs: dict[str, GraphSet], precision: str
) -> None:
    """Each variant ships select_past and select_sources, named by the contract, typed as its
    decoder takes the cache (float16 in fp16), listed and checksummed in its manifest, and
    giving exactly x[index] for any index: repeated rows, reordered, fewer, none."""
    graphs = tiny_graphs[precision]
    names = GraphNames(2)
    manifest = graphs.manifest()
    assert {graphs.select_past.name, graphs.select_sources.name} <= set(manifest["sha256"])
    decoder = {i.name: i.type for i in ort_session(graphs.decoder).get_inputs()}
    dtype = np.float16 if decoder["past_self_k_0"] == "tensor(float16)" else np.float32
    assert (dtype == np.float16) == (precision == "fp16")
    rng = np.random.default_rng(0)
    for path, inputs, outputs in (
        (graphs.select_past, names.select_past_inputs, names.select_past_outputs),
        (graphs.select_sources, names.select_sources_inputs, names.select_sources_outputs),
    ):
        key = "select_past" if path == graphs.select_past else "select_sources"
        assert manifest[key] == {"inputs": inputs, "outputs": outputs}
        session = ort_session(path)
        assert [i.name for i in session.get_inputs()] == inputs
        assert [o.name for o in session.get_outputs()] == outputs
        assert all(decoder[i.name] == i.type for i in session.get_inputs()[1:])
        feeds = {
            name: rng.random((5, 4, 3, 8)).astype(dtype)
            if name != "src_mask"
            else rng.random((5, 3)) > 0.5
            for name in inputs[1:]
        }
        for index in ([4, 0, 0, 2], [1], []):
            got = session.run(None, {"index": np.array(index, dtype=np.int64), **feeds})
            for name, have in zip(inputs[1:], got, strict=True):
                assert have.dtype == feeds[name].dtype
                np.testing.assert_array_equal(have, feeds[name][index])


def test_a_corrupt_select_graph_is_exported_again(tiny_model_dir: Path, tmp_path: Path) -> None:
    graphs = ensure_graphs(tiny_model_dir, "fp32", tmp_path)
    whole = graphs.select_past.read_bytes()
    graphs.select_past.write_bytes(whole[: len(whole) // 2])
    again = ensure_graphs(tiny_model_dir, "fp32", tmp_path)
    assert again.select_past.read_bytes() == whole
    onnx.checker.check_model(str(again.select_past), full_check=True)


def test_an_export_without_select_graphs_gets_them_when_run(
    tiny_model_dir: Path, tiny_graphs: dict[str, GraphSet], tmp_path: Path, data_dir: Path
) -> None:
    """graphs_dir (an A/B of two exports) also takes an export made before the row-select
    graphs: they are written beside its decoder, and it translates as the current one."""
    from service.engine.loader import load_engine

    current = tiny_graphs["fp32"]
    old = tmp_path / "old"
    old.mkdir()
    for path in (current.encoder, current.decoder):
        shutil.copy(path, old / path.name)
    texts = read_lines(data_dir, "test_2016_flickr", "en")[:6]
    want = load_engine(tiny_model_dir, graphs_dir=current.directory).translate(texts, beam_size=2)
    got = load_engine(tiny_model_dir, graphs_dir=old).translate(texts, beam_size=2)
    assert [t.tokens for t in got] == [t.tokens for t in want]
    assert (old / current.select_past.name).read_bytes() == current.select_past.read_bytes()


def test_moe_export_matches_torch(
    tiny_moe_model_dir: Path, tmp_path: Path, sources: list[list[int]]
) -> None:
    loaded = load_model(tiny_moe_model_dir)
    graphs = export_graphs(tiny_moe_model_dir, tmp_path / "moe")["fp32"]
    src_ids, src_mask = pad_batch(sources[:5], loaded.config.pad_id)
    fed, expected, _ = torch_reference(loaded.model, src_ids, src_mask, steps=8)
    got, _ = ort_decode(graphs, src_ids, src_mask, fed)
    for want, have in zip(expected, got, strict=True):
        np.testing.assert_allclose(have, want.numpy(), atol=1e-4)


def test_graphs_cached_by_checkpoint_hash(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NMT_ARTIFACTS_DIR", str(tmp_path))
    first = ensure_graphs(tiny_model_dir, "fp32")
    assert first.directory == tmp_path / f"en-de-{model_hash(tiny_model_dir)}" / "fp32"
    mtime = first.decoder.stat().st_mtime_ns
    again = ensure_graphs(tiny_model_dir, "fp32")
    assert again.directory == first.directory
    assert again.decoder.stat().st_mtime_ns == mtime  # reused, not exported again
    # Only finished variants are visible: no temporary directories are left behind.
    assert sorted(p.name for p in first.directory.parent.iterdir()) == ["fp32"]


def manifest(version: str, graph_format: int = GRAPH_FORMAT) -> str:
    return json.dumps({"model_hash": version, "format": graph_format})


def test_publish_keeps_the_first_of_two_racing_exports(tmp_path: Path) -> None:
    final = tmp_path / "fp32"
    for label in ("first", "second"):
        tmp = tmp_path / f".fp32-{label}"
        tmp.mkdir()
        (tmp / MANIFEST_FILE).write_text(manifest("abc"))
        (tmp / "decoder.onnx").write_text(label)
        _publish(tmp, final, "abc")
    assert (final / "decoder.onnx").read_text() == "first"


def test_publish_replaces_another_checkpoints_graphs(tmp_path: Path) -> None:
    final = tmp_path / "fp32"
    final.mkdir()
    (final / MANIFEST_FILE).write_text(manifest("old"))
    tmp = tmp_path / ".fp32-new"
    tmp.mkdir()
    (tmp / MANIFEST_FILE).write_text(manifest("new"))
    _publish(tmp, final, "new")
    assert json.loads((final / MANIFEST_FILE).read_text())["model_hash"] == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["fp32"]


def test_graphs_of_an_older_format_are_exported_again(tiny_model_dir: Path, tmp_path: Path) -> None:
    first = export_graphs(tiny_model_dir, tmp_path)["fp32"]
    version = model_hash(tiny_model_dir)
    (first.directory / MANIFEST_FILE).write_text(manifest(version, GRAPH_FORMAT - 1))
    again = export_graphs(tiny_model_dir, tmp_path)["fp32"]
    assert again.manifest()["format"] == GRAPH_FORMAT


def test_cli_writes_requested_variants(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export_main(["--model", str(tiny_model_dir), "--out", str(tmp_path / "out"), "--int8"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["fp32", "int8"]
    assert "int8:" in capsys.readouterr().out


@pytest.mark.parametrize("vocab", [8000, 97, 10])
def test_two_stage_top_k_is_exact(vocab: int, tmp_path: Path) -> None:
    """The decoder's top-k (chunk maxima, then the best chunks' tokens) equals a full sort of
    each row: values descending, ties to the lower token id, any k from 0 to V, also when
    the vocabulary does not divide into chunks (97, padded) or k exceeds the chunk count."""
    from onnx import TensorProto, helper

    from export.exporter import add_top_k, top_k_chunk

    graph = helper.make_graph(
        [helper.make_node("Identity", ["scores"], ["log_probs"])],
        "scores",
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", vocab])],
        [helper.make_tensor_value_info("log_probs", TensorProto.FLOAT, ["batch", vocab])],
    )
    path = tmp_path / "top_k.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    add_top_k(path, vocab)
    session = ort_session(path)
    rng = np.random.default_rng(vocab)
    # Few distinct values: many ties, within and across chunks.
    scores = rng.integers(-6, 0, size=(5, vocab)).astype(np.float32)
    scores[1] = rng.standard_normal(vocab)
    chunks = -(-vocab // top_k_chunk(vocab))
    for k in sorted({0, 1, 2, 8, chunks, chunks + 1, vocab} & set(range(vocab + 1))):
        values, tokens = session.run(["top_log_probs", "top_tokens"], {"scores": scores, "k": [k]})
        ids = np.arange(vocab)
        expected = np.stack([np.lexsort((ids, -row))[:k] for row in scores])
        np.testing.assert_array_equal(tokens, expected, err_msg=f"k={k}")
        np.testing.assert_array_equal(values, np.take_along_axis(scores, expected, axis=1))
