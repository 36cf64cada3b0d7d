"""Mixture of experts: top-k routing, shared experts, load balancing, and it trains."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model.feed_forward import MoEFeedForward
from model.transformer import build_model
from tests.tiny_models import tiny_config


def moe(**kw: object) -> MoEFeedForward:
    torch.manual_seed(0)
    values: dict[str, object] = dict(
        d_model=16, n_heads=2, d_ff=32, dropout=0.0, moe_experts=4, moe_top_k=2
    )
    values.update(kw)
    return MoEFeedForward(tiny_config(**values))


def test_each_token_goes_to_k_distinct_experts_with_weights_summing_to_one() -> None:
    layer = moe()
    tokens = torch.randn(30, 16)
    probs, experts, weights = layer.route(tokens)
    assert experts.shape == weights.shape == (30, 2)
    assert all(len(set(row)) == 2 for row in experts.tolist())
    torch.testing.assert_close(weights.sum(-1), torch.ones(30))
    torch.testing.assert_close(probs.sum(-1), torch.ones(30))


def test_sparse_dispatch_equals_the_dense_weighted_sum() -> None:
    layer = moe(moe_shared_experts=1)
    x = torch.randn(2, 5, 16)
    out = layer(x)
    tokens = x.reshape(10, 16)
    _, experts, weights = layer.route(tokens)
    expected = layer.shared_experts[0](tokens)
    for n in range(10):
        for slot in range(2):
            e = int(experts[n, slot])
            expected[n] += weights[n, slot] * layer.experts[e](tokens[n])
    torch.testing.assert_close(out.reshape(10, 16), expected, atol=1e-5, rtol=1e-5)


def test_unselected_experts_do_not_run() -> None:
    layer = moe(moe_experts=8, moe_top_k=1)
    calls = {i: 0 for i in range(8)}
    for i, expert in enumerate(layer.experts):
        expert.register_forward_hook(lambda _m, inp, _o, i=i: calls.__setitem__(i, inp[0].size(0)))
    tokens = torch.randn(1, 3, 16)
    layer(tokens)
    _, experts, _ = layer.route(tokens.reshape(3, 16))
    assert sum(calls.values()) == 3
    assert {i for i, n in calls.items() if n} == set(experts.flatten().tolist())


def test_load_balancing_loss_is_one_when_balanced_and_higher_when_not() -> None:
    layer = moe(moe_top_k=1)
    uniform = torch.full((8, 4), 0.25)
    balanced = torch.arange(8).remainder(4)[:, None]
    collapsed = torch.zeros(8, 1, dtype=torch.long)
    peaked = F.one_hot(collapsed[:, 0], 4).float()
    assert float(layer.load_balancing_loss(uniform, balanced)) == 1.0
    assert float(layer.load_balancing_loss(peaked, collapsed)) == 4.0


def test_moe_model_trains() -> None:
    torch.manual_seed(0)
    cfg = tiny_config(
        vocab_size=16,
        n_encoder_layers=1,
        n_decoder_layers=1,
        d_ff=32,
        moe_experts=4,
        moe_top_k=2,
        moe_shared_experts=1,
    )
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        seq = torch.randint(4, 16, (32, 5), generator=g)
        tgt_in = torch.cat([torch.full((32, 1), 2), seq], dim=1)
        tgt_out = torch.cat([seq, torch.full((32, 1), 3)], dim=1)
        logits, aux = model(seq, torch.ones_like(seq, dtype=torch.bool), tgt_in)
        loss = F.cross_entropy(logits.reshape(-1, 16), tgt_out.reshape(-1))
        opt.zero_grad()
        (loss + cfg.moe_aux_loss_weight * aux).backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    gate_grads = [layer.ffn.gate.weight for layer in model.encoder_layers]
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in gate_grads)


def test_the_model_collects_every_blocks_load_balancing_loss() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(vocab_size=16, moe_experts=4, moe_top_k=1)).eval()
    blocks = [m for m in model.modules() if isinstance(m, MoEFeedForward)]
    inputs: list[torch.Tensor] = []
    for block in blocks:
        block.register_forward_hook(lambda _m, inp, _o: inputs.append(inp[0]))
    src = torch.randint(4, 16, (3, 6))
    with torch.no_grad():
        _, aux = model(src, torch.ones_like(src, dtype=torch.bool), src[:, :4])
        expected = 0.0
        for block, x in zip(blocks, inputs, strict=True):
            probs, experts, _ = block.route(x.reshape(-1, x.size(-1)))
            expected += float(block.load_balancing_loss(probs, experts))
    assert len(blocks) == 4  # two encoder and two decoder layers
    # each block's loss is positive, so a block left out (or a stale one) shows
    assert float(aux) == pytest.approx(expected, rel=1e-6)
