"""The Transformer encoder-decoder, in the paper's order: embeddings and positions,
attention, Add&Norm, the feed-forward network (model/feed_forward.py), the layers, the
Encoder and Decoder stacks, the generator, and the model that joins them.

Masks are boolean and True where attention is allowed. The decoder never keeps state on a
module: its keys and values travel in an explicit `KVCache` that `decode_step` takes and
returns, the same inputs and outputs the ONNX decoder-with-past graph has.

The attribute names are the checkpoints' keys (`encoder_layers.0.self_attn.q_proj.weight`,
`encoder_norm.gamma`, ...), and their order is the optimiser's parameter order in a resumable
`last.pt`: both stay as they are when the code moves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import ModelConfig
from model.feed_forward import build_feed_forward, load_balancing_loss


# ----- embeddings and positions -----
class Embeddings(nn.Module):
    """Token embedding scaled by sqrt(d_model)."""

    def __init__(self, vocab_size: int, d_model: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(vocab_size, d_model) * d_model**-0.5)
        self.scale = math.sqrt(d_model)

    def forward(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.weight) * self.scale


def sinusoidal_table(max_length: int, d_model: int) -> Tensor:
    position = torch.arange(max_length, dtype=torch.float32)[:, None]  # (L, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float32)  # (D/2,)
    angle = position / torch.pow(10000.0, two_i / d_model)  # (L, D/2)
    table = torch.zeros(max_length, d_model)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle)
    return table


class PositionalEncoding(nn.Module):
    """Adds PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...), then dropout."""

    table: Tensor

    def __init__(self, d_model: int, max_length: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("table", sinusoidal_table(max_length, d_model), persistent=False)

    def forward(self, x: Tensor, offset: Tensor | int = 0) -> Tensor:
        positions = torch.arange(x.size(1), device=x.device) + offset
        return self.dropout(x + self.table[positions])


# ----- attention -----
def scaled_dot_product_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, dropout: float = 0.0
) -> Tensor:
    """softmax(Q K^T / sqrt(d_k)) V with a stable softmax; mask is True where a key is visible."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, H, Tq, Tk)
    if mask is not None:
        # A finite fill keeps a fully masked row (a padded query) uniform instead of NaN.
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    scores = scores - scores.amax(dim=-1, keepdim=True)
    weights = scores.exp()
    weights = weights / weights.sum(dim=-1, keepdim=True)
    if dropout > 0.0:
        weights = F.dropout(weights, p=dropout, training=True)
    return weights @ v  # (B, H, Tq, Dh)


class MultiHeadAttention(nn.Module):
    """h attention heads on d_model/h subspaces, concatenated and projected back to d_model."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.d_head = config.d_head
        self.dropout = config.dropout
        self.q_proj = nn.Linear(config.d_model, config.d_model)
        self.kv_proj = nn.Linear(config.d_model, 2 * config.d_model)
        self.out_proj = nn.Linear(config.d_model, config.d_model)

    def split_heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, T, Dh)

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of x, each (B, H, T, Dh): what the cache stores."""
        k, v = self.kv_proj(x).chunk(2, dim=-1)
        return self.split_heads(k), self.split_heads(v)

    def forward(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        q = self.split_heads(self.q_proj(x))
        p = self.dropout if self.training else 0.0
        out = scaled_dot_product_attention(q, k, v, mask, dropout=p)  # (B, H, T, Dh)
        b, _, t, _ = out.shape
        out = out.transpose(1, 2).reshape(b, t, self.n_heads * self.d_head)  # (B, T, D)
        return self.out_proj(out)


# ----- Add & Norm -----
class LayerNorm(nn.Module):
    """Normalise over the feature dimension, then scale by gamma and shift by beta."""

    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(d_model))
        self.beta = nn.Parameter(torch.zeros(d_model))

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=-1, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.gamma + self.beta


class SublayerConnection(nn.Module):
    """Add & Norm around a sublayer: post-norm Norm(x + f(x)) or pre-norm x + f(Norm(x)).

    Every sublayer of the model goes through `forward`. Its two halves are public for
    export/, whose graphs run a sublayer on packed or fused tensors in between.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.norm_first = config.norm_first
        self.norm = LayerNorm(config.d_model, config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
        return self.residual(x, sublayer(self.sublayer_input(x)))

    def sublayer_input(self, x: Tensor) -> Tensor:
        return self.norm(x) if self.norm_first else x

    def residual(self, x: Tensor, out: Tensor) -> Tensor:
        y = x + self.dropout(out)
        return y if self.norm_first else self.norm(y)


# ----- the layers (the position-wise FFN is in model/feed_forward.py) -----
class EncoderLayer(nn.Module):
    """Self-attention + Add&Norm, then FFN + Add&Norm."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(config)
        self.ffn = build_feed_forward(config)
        self.attn_sublayer = SublayerConnection(config)
        self.ffn_sublayer = SublayerConnection(config)

    def forward(self, x: Tensor, src_mask: Tensor) -> Tensor:
        mask = src_mask[:, None, None, :]  # (B, 1, 1, S)

        def self_attention(h: Tensor) -> Tensor:
            k, v = self.self_attn.project_kv(h)
            return self.self_attn(h, k, v, mask)

        x = self.attn_sublayer(x, self_attention)
        return self.ffn_sublayer(x, self.ffn)


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention over the encoder output, FFN; each with Add&Norm."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(config)
        self.cross_attn = MultiHeadAttention(config)
        self.ffn = build_feed_forward(config)
        self.self_sublayer = SublayerConnection(config)
        self.cross_sublayer = SublayerConnection(config)
        self.ffn_sublayer = SublayerConnection(config)

    def forward(
        self,
        x: Tensor,
        past_k: Tensor,
        past_v: Tensor,
        cross_k: Tensor,
        cross_v: Tensor,
        causal_mask: Tensor,
        src_mask: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Output, and the self-attention keys and values with this step's appended."""
        present: list[Tensor] = []  # the keys and values the self-attention saw

        def self_attention(h: Tensor) -> Tensor:
            k, v = self.self_attn.project_kv(h)
            k = torch.cat([past_k, k], dim=2)  # (B, H, P+T, Dh)
            v = torch.cat([past_v, v], dim=2)
            present.extend((k, v))
            return self.self_attn(h, k, v, causal_mask)

        cross_mask = src_mask[:, None, None, :]  # (B, 1, 1, S)

        def cross_attention(h: Tensor) -> Tensor:
            return self.cross_attn(h, cross_k, cross_v, cross_mask)

        x = self.self_sublayer(x, self_attention)
        x = self.cross_sublayer(x, cross_attention)
        x = self.ffn_sublayer(x, self.ffn)
        k, v = present
        return x, k, v


# ----- the stacks -----
class Encoder(nn.ModuleList):
    """N encoder layers. A pre-norm model's final norm is `Transformer.encoder_norm`, as
    checkpoints name it."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(EncoderLayer(config) for _ in range(config.n_encoder_layers))

    def __iter__(self) -> Iterator[EncoderLayer]:
        return cast(Iterator[EncoderLayer], super().__iter__())

    def forward(self, x: Tensor, src_mask: Tensor) -> Tensor:
        for layer in self:
            x = layer(x, src_mask)
        return x


@dataclass
class KVCache:
    """Decoder keys and values for a batch, stacked over layers."""

    # self-attention: grows by one position per decoding step
    self_k: Tensor  # (L, B, H, T, Dh)
    self_v: Tensor  # (L, B, H, T, Dh)
    # cross-attention: computed once from the encoder output
    cross_k: Tensor  # (L, B, H, S, Dh)
    cross_v: Tensor  # (L, B, H, S, Dh)

    @property
    def length(self) -> int:
        return self.self_k.size(3)

    def select(self, index: Tensor) -> KVCache:
        """Keep (and reorder) batch rows: dropping finished sentences or following beams."""
        return KVCache(*(t.index_select(1, index) for t in self.tensors()))

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.self_k, self.self_v, self.cross_k, self.cross_v


def causal_mask(past_len: int, new: int, positions: Tensor | None, device: torch.device) -> Tensor:
    """The self-attention mask of `new` tokens after a past of `past_len` slots.

    positions None: every row is at past_len, and the mask is (T, P+T). Otherwise rows
    stand at different positions over a left-padded past: row b's real past is its last
    positions[b] slots, and the mask is (B, 1, T, P+T). Each new token sees the past and
    the new tokens up to itself.
    """
    key = torch.arange(past_len + new, device=device)
    query = torch.arange(new, device=device) + past_len
    causal = key[None, :] <= query[:, None]  # (T, P+T)
    if positions is None:
        return causal
    real = key[None, :] >= (past_len - positions)[:, None]  # (B, P+T): not left padding
    return (causal[None] & real[:, None, :])[:, None]


class Decoder(nn.ModuleList):
    """N decoder layers over a `KVCache`. A pre-norm model's final norm is
    `Transformer.decoder_norm`, as checkpoints name it."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(DecoderLayer(config) for _ in range(config.n_decoder_layers))

    def __iter__(self) -> Iterator[DecoderLayer]:
        return cast(Iterator[DecoderLayer], super().__iter__())

    def cross_attention_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-attention keys and values of every layer, each (L, B, H, S, Dh)."""
        kv = [layer.cross_attn.project_kv(memory) for layer in self]
        return torch.stack([k for k, _ in kv]), torch.stack([v for _, v in kv])

    def forward(
        self, x: Tensor, past: KVCache, causal_mask: Tensor, src_mask: Tensor
    ) -> tuple[Tensor, KVCache]:
        """Output and the cache with this step's self-attention keys and values."""
        ks, vs = [], []
        for i, layer in enumerate(self):
            x, k, v = layer(
                x,
                past.self_k[i],
                past.self_v[i],
                past.cross_k[i],
                past.cross_v[i],
                causal_mask,
                src_mask,
            )
            ks.append(k)
            vs.append(v)
        return x, KVCache(torch.stack(ks), torch.stack(vs), past.cross_k, past.cross_v)


# ----- the generator -----
class Generator(nn.Module):
    """Unembedding: a linear map to vocabulary logits (softmax is taken by the caller)."""

    def __init__(self, d_model: int, vocab_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, vocab_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


# ----- the model -----
class Transformer(nn.Module):
    """Encoder-decoder Transformer with tied source/target/output embeddings."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = Embeddings(config.vocab_size, config.d_model)
        self.positional = PositionalEncoding(config.d_model, config.max_length, config.dropout)
        self.encoder_layers = Encoder(config)
        self.decoder_layers = Decoder(config)
        # Pre-norm leaves the residual stream unnormalised, so each stack ends with a norm.
        self.encoder_norm = LayerNorm(config.d_model, config.layer_norm_eps)
        self.decoder_norm = LayerNorm(config.d_model, config.layer_norm_eps)
        self.generator = Generator(config.d_model, config.vocab_size)
        if not config.tie_embeddings:
            self.target_embedding = Embeddings(config.vocab_size, config.d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name, p in self.named_parameters():
            if p.dim() == 2 and "embedding" not in name:
                nn.init.xavier_uniform_(p)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)
        if self.config.tie_embeddings:
            self.generator.proj.weight = self.embedding.weight

    def target_embed(self, ids: Tensor) -> Tensor:
        if self.config.tie_embeddings:
            return self.embedding(ids)
        return self.target_embedding(ids)

    def encode(self, src_ids: Tensor, src_mask: Tensor) -> Tensor:
        """(B, S) source ids and mask -> encoder output (B, S, D)."""
        x = self.encoder_layers(self.positional(self.embedding(src_ids)), src_mask)
        if self.config.norm_first:
            x = self.encoder_norm(x)
        # Zero at padding: every reader masks those positions, but a source with no tokens
        # at all attends evenly over them, and it should not depend on what they held.
        return x.masked_fill(~src_mask[..., None], 0.0)

    def cross_attention_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-attention keys and values of every decoder layer, each (L, B, H, S, Dh)."""
        return self.decoder_layers.cross_attention_kv(memory)

    def empty_cache(self, memory: Tensor) -> KVCache:
        cross_k, cross_v = self.cross_attention_kv(memory)
        empty = cross_k.new_zeros(*cross_k.shape[:3], 0, cross_k.size(-1))  # (L, B, H, 0, Dh)
        return KVCache(empty, empty, cross_k, cross_v)

    def decode_step(
        self,
        tgt_ids: Tensor,
        memory: Tensor | None,
        src_mask: Tensor,
        past: KVCache | None,
        positions: Tensor | None = None,
    ) -> tuple[Tensor, KVCache]:
        """Decode T new target tokens given the cache; returns logits (B, T, V) and the new cache.

        With no past, the cross-attention keys/values are computed from memory; with a past,
        memory is not needed and may be None.

        positions (B,): each row's position, the tokens it has decoded so far, when rows
        differ (continuous batching). The past is then left-padded: row b's keys are the
        last positions[b] of the P cached ones, the rest masked. None: every row is at P.
        """
        if past is None:
            if memory is None:
                raise ValueError("decode_step needs memory when there is no past cache")
            past = self.empty_cache(memory)
        offset = past.length
        first = offset if positions is None else positions[:, None]
        x = self.positional(self.target_embed(tgt_ids), first)
        mask = causal_mask(offset, tgt_ids.size(1), positions, x.device)
        x, present = self.decoder_layers(x, past, mask, src_mask)
        if self.config.norm_first:
            x = self.decoder_norm(x)
        return self.generator(x), present

    def forward(self, src_ids: Tensor, src_mask: Tensor, tgt_ids: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher-forced training pass: logits (B, T, V) and the MoE auxiliary loss."""
        memory = self.encode(src_ids, src_mask)
        logits, _ = self.decode_step(tgt_ids, memory, src_mask, None)
        # a sum per stack, then the two: the order earlier runs used, so they reproduce exactly
        aux = load_balancing_loss(self.encoder_layers.modules(), memory)
        return logits, aux + load_balancing_loss(self.decoder_layers.modules(), memory)


def build_model(config: ModelConfig) -> Transformer:
    """Build a freshly initialised model from its config."""
    return Transformer(config)
