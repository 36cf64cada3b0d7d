"""Our checkpoint as a CTranslate2 model: the peer engine of the benchmark, same weights.

CTranslate2's `TransformerSpec` is the same pre-norm (or post-norm) encoder-decoder; its
self-attention takes fused query/key/value weights, its cross-attention a query projection
and fused key/value weights, which is how our `MultiHeadAttention` stores them already
(`q_proj` and `kv_proj`). Our interleaved sinusoidal table is handed over as is, so the
positions do not depend on CTranslate2's own (concatenated sin|cos) table.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.checkpoint import LoadedModel
from model.feed_forward import PositionwiseFeedForward
from model.transformer import (
    DecoderLayer,
    EncoderLayer,
    LayerNorm,
    MultiHeadAttention,
    SublayerConnection,
    Transformer,
)

CT2_DIR = "ctranslate2"


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy().copy()


def _set_linear(spec: object, linear: nn.Linear) -> None:
    spec.weight = _array(linear.weight)  # type: ignore[attr-defined]
    spec.bias = _array(linear.bias)  # type: ignore[attr-defined]


def _set_fused_linear(spec: object, first: nn.Linear, second: nn.Linear) -> None:
    spec.weight = _array(torch.cat([first.weight, second.weight]))  # type: ignore[attr-defined]
    spec.bias = _array(torch.cat([first.bias, second.bias]))  # type: ignore[attr-defined]


def _set_norm(spec: object, norm: LayerNorm) -> None:
    spec.gamma = _array(norm.gamma)  # type: ignore[attr-defined]
    spec.beta = _array(norm.beta)  # type: ignore[attr-defined]


def _set_self_attention(spec: object, attn: MultiHeadAttention) -> None:
    _set_fused_linear(spec.linear[0], attn.q_proj, attn.kv_proj)  # type: ignore[attr-defined]
    _set_linear(spec.linear[1], attn.out_proj)  # type: ignore[attr-defined]


def _set_cross_attention(spec: object, attn: MultiHeadAttention) -> None:
    _set_linear(spec.linear[0], attn.q_proj)  # type: ignore[attr-defined]
    _set_linear(spec.linear[1], attn.kv_proj)  # type: ignore[attr-defined]
    _set_linear(spec.linear[2], attn.out_proj)  # type: ignore[attr-defined]


def _set_ffn(spec: object, sublayer: SublayerConnection, ffn: nn.Module) -> None:
    if not isinstance(ffn, PositionwiseFeedForward):
        raise ValueError("CTranslate2 has no mixture-of-experts encoder-decoder")
    _set_norm(spec.layer_norm, sublayer.norm)  # type: ignore[attr-defined]
    _set_linear(spec.linear_0, ffn.w1)  # type: ignore[attr-defined]
    _set_linear(spec.linear_1, ffn.w2)  # type: ignore[attr-defined]


def build_spec(model: Transformer, vocabulary: Sequence[str]) -> object:
    """A `ctranslate2.specs.TransformerSpec` holding the weights of our model."""
    import ctranslate2

    config = model.config
    if config.moe_experts:
        raise ValueError("CTranslate2 has no mixture-of-experts encoder-decoder")
    common = ctranslate2.specs.common_spec
    activation = common.Activation.GELU if config.activation == "gelu" else common.Activation.RELU
    spec = ctranslate2.specs.TransformerSpec.from_config(
        (config.n_encoder_layers, config.n_decoder_layers),
        config.n_heads,
        pre_norm=config.norm_first,
        activation=activation,
    )
    spec.config.layer_norm_epsilon = config.layer_norm_eps
    table = _array(model.positional.table)  # (max_length, D), interleaved sin/cos
    target_embedding = model.embedding if config.tie_embeddings else model.target_embedding

    encoder, decoder = spec.encoder, spec.decoder
    encoder.embeddings[0].weight = _array(model.embedding.weight)
    encoder.scale_embeddings = True
    encoder.position_encodings.encodings = table
    encoder_layers = [x for x in model.encoder_layers if isinstance(x, EncoderLayer)]
    for layer_spec, layer in zip(encoder.layer, encoder_layers, strict=True):
        _set_norm(layer_spec.self_attention.layer_norm, layer.attn_sublayer.norm)
        _set_self_attention(layer_spec.self_attention, layer.self_attn)
        _set_ffn(layer_spec.ffn, layer.ffn_sublayer, layer.ffn)

    decoder.embeddings.weight = _array(target_embedding.weight)
    decoder.scale_embeddings = True
    decoder.position_encodings.encodings = table
    decoder_layers = [x for x in model.decoder_layers if isinstance(x, DecoderLayer)]
    for layer_spec, block in zip(decoder.layer, decoder_layers, strict=True):
        _set_norm(layer_spec.self_attention.layer_norm, block.self_sublayer.norm)
        _set_self_attention(layer_spec.self_attention, block.self_attn)
        _set_norm(layer_spec.attention.layer_norm, block.cross_sublayer.norm)
        _set_cross_attention(layer_spec.attention, block.cross_attn)
        _set_ffn(layer_spec.ffn, block.ffn_sublayer, block.ffn)
    if config.norm_first:
        _set_norm(encoder.layer_norm, model.encoder_norm)
        _set_norm(decoder.layer_norm, model.decoder_norm)
    _set_linear(decoder.projection, model.generator.proj)

    spec.register_source_vocabulary(list(vocabulary))
    spec.register_target_vocabulary(list(vocabulary))
    spec.validate()
    return spec


def convert(loaded: LoadedModel, out_dir: Path) -> Path:
    """Write the float32 CTranslate2 model of a loaded checkpoint (int8 is chosen at load)."""
    if (out_dir / "model.bin").exists():
        return out_dir
    sp = loaded.tokenizer.sp
    vocabulary = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    spec = build_spec(loaded.model, vocabulary)
    spec.optimize(quantization="float32")  # type: ignore[attr-defined]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".ct2-", dir=out_dir.parent))
    spec.save(str(tmp))  # type: ignore[attr-defined]
    tmp.chmod(0o755)  # mkdtemp makes it private
    try:
        tmp.rename(out_dir)
    except OSError:  # another process finished the same conversion first
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
