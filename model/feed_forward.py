"""Position-wise feed-forward networks: the dense FFN and the mixture of experts."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import ModelConfig


class PositionwiseFeedForward(nn.Module):
    """FFN(x) = f(x W1 + b1) W2 + b2, applied to every position on its own."""

    def __init__(self, d_model: int, d_ff: int, activation: str, dropout: float) -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, d_ff)
        self.w2 = nn.Linear(d_ff, d_model)
        self.activation = F.gelu if activation == "gelu" else F.relu
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(self.dropout(self.activation(self.w1(x))))


class MoEFeedForward(nn.Module):
    """Mixture of experts: E routed experts (top-k per token), optional always-on shared experts.

    It returns only its output, as the dense FFN does, so that one Add&Norm path serves every
    sublayer; the load-balancing loss of its last pass waits in `aux_loss` for the training
    loss to collect (`load_balancing_loss` below).
    """

    aux_loss: Tensor | None

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.aux_loss = None
        self.n_experts = config.moe_experts
        self.top_k = config.moe_top_k
        self.gate = nn.Linear(config.d_model, config.moe_experts, bias=False)

        def expert() -> PositionwiseFeedForward:
            return PositionwiseFeedForward(
                config.d_model, config.d_ff, config.activation, config.dropout
            )

        self.experts = nn.ModuleList([expert() for _ in range(config.moe_experts)])
        self.shared_experts = nn.ModuleList([expert() for _ in range(config.moe_shared_experts)])

    def route(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Gate probabilities (N, E), the top-k expert ids (N, k) and their renormalised weights."""
        probs = F.softmax(self.gate(x), dim=-1)
        weights, experts = probs.topk(self.top_k, dim=-1)
        return probs, experts, weights / weights.sum(dim=-1, keepdim=True)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, D); keeps this pass's load-balancing loss in `aux_loss`."""
        b, t, d = x.shape
        tokens = x.reshape(b * t, d)  # (N, D)
        probs, experts, weights = self.route(tokens)
        if torch.onnx.is_in_onnx_export():
            routed = self._dense_mixture(tokens, experts, weights)
        else:
            routed = self._sparse_mixture(tokens, experts, weights)
        for shared in self.shared_experts:
            routed = routed + shared(tokens)
        self.aux_loss = self.load_balancing_loss(probs, experts)
        return routed.reshape(b, t, d)

    def _sparse_mixture(self, tokens: Tensor, experts: Tensor, weights: Tensor) -> Tensor:
        """Each expert runs only on the tokens routed to it."""
        out = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            token_idx, slot = torch.nonzero(experts == e, as_tuple=True)
            if token_idx.numel() == 0:
                continue
            y = expert(tokens[token_idx]) * weights[token_idx, slot, None]
            out = out.index_add(0, token_idx, y)
        return out

    def _dense_mixture(self, tokens: Tensor, experts: Tensor, weights: Tensor) -> Tensor:
        """The same sum with every expert on every token and zero weight off the top-k.

        Used for export, where data-dependent shapes would make the graph fragile.
        """
        gate = torch.zeros(tokens.size(0), self.n_experts, dtype=tokens.dtype, device=tokens.device)
        gate = gate.scatter(1, experts, weights)  # (N, E), k non-zeros per row
        outs = torch.stack([expert(tokens) for expert in self.experts], dim=1)  # (N, E, D)
        return (gate[:, :, None] * outs).sum(dim=1)

    def load_balancing_loss(self, probs: Tensor, experts: Tensor) -> Tensor:
        """E * sum_e f_e * P_e: f_e the share of routed slots, P_e the mean gate probability."""
        counts = F.one_hot(experts, self.n_experts).sum(dim=(0, 1)).to(probs.dtype)  # (E,)
        f = counts / experts.numel()
        p = probs.mean(dim=0)
        return self.n_experts * (f * p).sum()


def build_feed_forward(config: ModelConfig) -> nn.Module:
    """A dense FFN, or a mixture of experts when the config asks for one."""
    if config.moe_experts:
        return MoEFeedForward(config)
    return PositionwiseFeedForward(config.d_model, config.d_ff, config.activation, config.dropout)


def load_balancing_loss(modules: Iterable[nn.Module], like: Tensor) -> Tensor:
    """The sum of the MoE blocks' load-balancing losses from their last pass; 0 when dense.

    `like` gives the zero's dtype and device.
    """
    total = like.new_zeros(())
    for module in modules:
        if isinstance(module, MoEFeedForward):
            if module.aux_loss is None:
                raise RuntimeError("a MoE block's load-balancing loss is read before its pass")
            total = total + module.aux_loss
    return total


def feed_forward(ffn: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Run a dense or MoE FFN; returns its output and its load-balancing loss (0 when dense).

    For export/, which calls the FFN outside Add&Norm; the model itself calls `ffn(x)`.
    """
    out = ffn(x)
    return out, load_balancing_loss([ffn], x)
