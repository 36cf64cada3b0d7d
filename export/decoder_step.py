"""The decoder-with-past graph: `Transformer.decode_step` for exactly one new token per row.

Same weights, same operations, arranged for a graph that runs once per generated token:

- activations are (B, D), not (B, 1, D), so every Linear becomes one Gemm (MatMul + bias);
- the self-attention's query and key/value projections are one MatMul (weights
  concatenated at export) split at constant offsets;
- with a single query, (B, 1, H, Dh) -> (B, H, 1, Dh) is a reshape, not a transpose;
- rows may sit at different positions (continuous batching: a sentence joins a running
  batch at its first token): each row's position is an input, the self-attention past is
  left-padded to the longest row's, and one additive mask, built once per step from the
  positions, hides each row's padding in every layer (graph format 6);
- reshapes take -1 for the batch, and the source count is read once per step: a size
  read from a tensor is a Shape -> Gather -> Unsqueeze -> Concat chain ORT runs every step;
- softmax is ONNX Softmax (ORT computes it stably, as the model's hand-written one does);
- the source mask is broadcast once per step, not once per layer;
- only the new position's log-softmax is computed, inside the graph;
- the source side (mask, cross keys/values) has one entry per sentence, not per beam: the
  beams of a sentence query its keys together, so beam search neither copies the cross
  cache k times nor reads it k times per step.

Against a graph traced from `decode_step` itself this leaves ORT fewer nodes and less
CPU per step (docs/decisions.md). Linears are written as `x @ W.T + b` because dynamic
int8 quantization covers MatMul and leaves Gemm in float; ORT fuses the pair back into a
Gemm in the float32 graph.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from export.graphs import decoder_layers
from model.feed_forward import PositionwiseFeedForward, feed_forward
from model.transformer import MultiHeadAttention, Transformer


def linear(x: Tensor, layer: nn.Linear) -> Tensor:
    return x @ layer.weight.t() + layer.bias


def fused_qkv(attn: MultiHeadAttention) -> nn.Linear:
    """One projection to [q; k; v] from a self-attention's q_proj and kv_proj."""
    q_proj, kv_proj = attn.q_proj, attn.kv_proj
    fused = nn.Linear(q_proj.in_features, q_proj.out_features + kv_proj.out_features)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([q_proj.weight, kv_proj.weight]))
        fused.bias.copy_(torch.cat([q_proj.bias, kv_proj.bias]))
    return fused


class DecoderStepGraph(nn.Module):
    """(tokens (B, 1), positions (B,), src_mask (N, S), past, cross) -> (log_probs (B, V),
    present).

    The source side has one entry per source, N of them; the B rows come in N contiguous
    groups of B / N rows (the beams of a sentence), row r decoding source r // (B / N).
    Row r has decoded positions[r] tokens: its past is the last positions[r] of the T slots.
    """

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model
        self.layers = decoder_layers(model)
        self.qkv = nn.ModuleList([fused_qkv(layer.self_attn) for layer in self.layers])

    def forward(
        self, tokens: Tensor, positions: Tensor, src_mask: Tensor, *cache: Tensor
    ) -> tuple[Tensor, ...]:
        model, config = self.model, self.model.config
        n, h, dh, d = config.n_decoder_layers, config.n_heads, config.d_head, config.d_model
        past_k, past_v = cache[:n], cache[n : 2 * n]
        cross_k, cross_v = cache[2 * n : 3 * n], cache[3 * n :]
        # the new token's embedding and position (dropout is off): as model.positional
        x = model.target_embed(tokens[:, 0]) + model.positional.table[positions]  # (B, D)
        sources = src_mask.size(0)
        cross_mask = src_mask[:, None, None, :]  # (N, 1, 1, S)
        fill = torch.finfo(x.dtype).min  # as the model: a fully masked row stays uniform
        # Self-attention sees a row's last positions[r] past slots and the new one. An
        # added 0 leaves a score as it is; the fill's exp is exactly 0 after the max (the
        # new key is always visible), as the model's masked_fill gives.
        slots = past_k[0].size(2)
        key = torch.arange(slots + 1, device=tokens.device)
        visible = key[None, :] >= (slots - positions)[:, None]  # (B, T + 1)
        self_bias = torch.where(visible, 0.0, fill).to(x.dtype)[:, None, None, :]
        present_k, present_v = [], []
        for layer, qkv, pk, pv, ck, cv in zip(
            self.layers, self.qkv, past_k, past_v, cross_k, cross_v, strict=True
        ):
            # masked self-attention over the past and the new position
            sub = layer.self_sublayer
            q, k, v = linear(sub.sublayer_input(x), qkv).split(d, dim=-1)  # (B, D) each
            q, k, v = (t.reshape(-1, h, 1, dh) for t in (q, k, v))  # (B, H, 1, Dh)
            k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)  # (B, H, T + 1, Dh)
            scores = q @ k.transpose(-2, -1) / math.sqrt(dh) + self_bias  # (B, H, 1, T + 1)
            weights = torch.softmax(scores, dim=-1)
            attended = (weights @ v).reshape(-1, d)
            x = sub.residual(x, linear(attended, layer.self_attn.out_proj))
            present_k.append(k)
            present_v.append(v)
            # cross-attention: the g rows of a source (its beams) query its keys together
            sub, attn = layer.cross_sublayer, layer.cross_attn
            q = linear(sub.sublayer_input(x), attn.q_proj)  # (B, D), B = sources * g
            q = q.reshape(sources, -1, h, dh).transpose(1, 2)  # (sources, H, g, Dh)
            scores = (q @ ck.transpose(-2, -1) / math.sqrt(dh)).masked_fill(~cross_mask, fill)
            attended = torch.softmax(scores, dim=-1) @ cv  # (sources, H, g, Dh)
            attended = attended.transpose(1, 2).reshape(-1, d)
            x = sub.residual(x, linear(attended, attn.out_proj))
            # position-wise feed-forward (a MoE block exports its dense-equivalent mixture)
            sub, ffn = layer.ffn_sublayer, layer.ffn
            hidden = sub.sublayer_input(x)
            if isinstance(ffn, PositionwiseFeedForward):
                out = linear(ffn.activation(linear(hidden, ffn.w1)), ffn.w2)
            else:
                out = feed_forward(ffn, hidden[:, None])[0][:, 0]
            x = sub.residual(x, out)
        if config.norm_first:
            x = model.decoder_norm(x)
        log_probs = torch.log_softmax(linear(x, model.generator.proj), dim=-1)  # (B, V)
        return (log_probs, *present_k, *present_v)
