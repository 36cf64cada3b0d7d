"""The encoder graph: `Transformer.encode` over the real tokens only, then the cross keys/values.

A batch of N sources padded to the longest, S, holds N * S positions; in the test set's
batches of 16 in file order 41% of them are padding. Every Linear (the attention's
projections, the FFN, the cross keys/values) acts on each position alone, so the graph
packs the real positions into (T, D) for them (NonZero + Gather) and scatters back to
(N, S, ...) only where positions meet: the self-attention's scores, and the cross
keys/values the decoder takes.

The model zeroes its encoder output at padded positions (`Transformer.encode`), so the graph
scatters into zeros and gives the same tensors; padded positions are masked everywhere they
are read, except by a source with no tokens at all, whose cross-attention is then the same
whatever else its batch holds.
"""

from __future__ import annotations

from typing import cast

from torch import Tensor, nn

from export.decoder_step import fused_qkv, linear
from export.graphs import decoder_layers
from model.feed_forward import feed_forward
from model.transformer import EncoderLayer, Transformer, scaled_dot_product_attention


def scatter_rows(packed: Tensor, index: Tensor, rows: int) -> Tensor:
    """(T, F) rows placed at `index` (T,) of a (rows, F) zero tensor."""
    out = packed.new_zeros(rows, packed.size(-1))
    return out.index_put((index,), packed)


class EncoderGraph(nn.Module):
    """(src_ids (N, S), src_mask (N, S)) -> cross keys of each layer, then cross values."""

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model
        self.layers = [layer for layer in model.encoder_layers if isinstance(layer, EncoderLayer)]
        self.qkv = nn.ModuleList([fused_qkv(layer.self_attn) for layer in self.layers])

    def forward(self, src_ids: Tensor, src_mask: Tensor) -> tuple[Tensor, ...]:
        model, config = self.model, self.model.config
        h, dh, d = config.n_heads, config.d_head, config.d_model
        n, s = src_ids.shape
        real = src_mask.reshape(-1).nonzero()[:, 0]  # (T,) positions of real tokens in N * S
        x = model.positional(model.embedding(src_ids)).reshape(n * s, d)[real]  # (T, D)
        mask = src_mask[:, None, None, :]  # (N, 1, 1, S)
        for layer, qkv in zip(self.layers, self.qkv, strict=True):
            sub = layer.attn_sublayer
            fused = cast(nn.Linear, qkv)  # ModuleList items are typed as plain Modules
            projected = scatter_rows(linear(sub.sublayer_input(x), fused), real, n * s)
            q, k, v = (
                t.reshape(n, s, h, dh).transpose(1, 2) for t in projected.split(d, dim=-1)
            )  # (N, H, S, Dh) each
            attended = scaled_dot_product_attention(q, k, v, mask)  # (N, H, S, Dh)
            attended = attended.transpose(1, 2).reshape(n * s, d)[real]  # (T, D)
            x = sub.residual(x, linear(attended, layer.self_attn.out_proj))
            sub = layer.ffn_sublayer
            x = sub.residual(x, feed_forward(layer.ffn, sub.sublayer_input(x)[None])[0][0])
        if config.norm_first:
            x = model.encoder_norm(x)
        memory = scatter_rows(x, real, n * s).reshape(n, s, d)  # zero at padding
        kv = [layer.cross_attn.project_kv(memory) for layer in decoder_layers(model)]
        return (*(k for k, _ in kv), *(v for _, v in kv))
