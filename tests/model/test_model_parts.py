"""Each part of the Transformer against a reference implementation or its formula."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model.transformer import (
    LayerNorm,
    MultiHeadAttention,
    PositionalEncoding,
    SublayerConnection,
    Transformer,
    build_model,
    scaled_dot_product_attention,
    sinusoidal_table,
)
from tests.tiny_models import tiny_config


def test_layer_norm_matches_torch() -> None:
    torch.manual_seed(0)
    norm = LayerNorm(16, eps=1e-5)
    with torch.no_grad():
        norm.gamma.normal_()
        norm.beta.normal_()
    x = torch.randn(3, 5, 16) * 4 + 2
    expected = F.layer_norm(x, (16,), norm.gamma, norm.beta, eps=1e-5)
    torch.testing.assert_close(norm(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_torch_sdpa(causal: bool) -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 6, 8) for _ in range(3))
    if causal:
        mask = torch.ones(6, 6, dtype=torch.bool).tril()
    else:
        mask = torch.ones(2, 1, 1, 6, dtype=torch.bool)
        mask[0, ..., 4:] = False  # two padded keys in the first sentence
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v, mask), expected, atol=1e-5, rtol=1e-5
    )


def test_attention_softmax_is_stable_for_large_scores() -> None:
    q = torch.full((1, 1, 2, 4), 1e4)
    k = torch.full((1, 1, 3, 4), 1e4)
    v = torch.randn(1, 1, 3, 4)
    out = scaled_dot_product_attention(q, k, v)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, v.mean(dim=2, keepdim=True).expand(1, 1, 2, 4))


def test_multi_head_attention_concatenates_heads_and_projects() -> None:
    torch.manual_seed(0)
    config = tiny_config(d_model=12, n_heads=3)
    mha = MultiHeadAttention(config).eval()
    x = torch.randn(2, 5, 12)
    k, v = mha.project_kv(x)
    assert k.shape == v.shape == (2, 3, 5, 4)  # (B, H, T, d_model / h)
    q = mha.q_proj(x).view(2, 5, 3, 4).transpose(1, 2)
    heads = [F.scaled_dot_product_attention(q[:, h], k[:, h], v[:, h]) for h in range(3)]
    expected = mha.out_proj(torch.cat(heads, dim=-1))
    torch.testing.assert_close(mha(x, k, v, None), expected, atol=1e-5, rtol=1e-5)


def test_positional_encoding_formula() -> None:
    d = 16
    table = sinusoidal_table(50, d)
    for pos in (0, 1, 7, 49):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-5)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)
    pe = PositionalEncoding(d, 50, dropout=0.0)
    x = torch.zeros(1, 4, d)
    torch.testing.assert_close(pe(x, offset=3), table[3:7][None])


@pytest.mark.parametrize("norm_first", [True, False])
def test_add_and_norm_orders(norm_first: bool) -> None:
    torch.manual_seed(0)
    config = tiny_config(d_model=8, n_heads=2, norm_first=norm_first)
    sub = SublayerConnection(config)
    x = torch.randn(2, 3, 8)

    def double(h: torch.Tensor) -> torch.Tensor:
        return 2 * h

    norm = F.layer_norm
    expected = x + 2 * norm(x, (8,)) if norm_first else norm(x + 2 * x, (8,))
    torch.testing.assert_close(sub(x, double), expected, atol=1e-5, rtol=1e-5)


def tiny(norm_first: bool = True, **kw: object) -> Transformer:
    torch.manual_seed(0)
    return build_model(tiny_config(vocab_size=50, norm_first=norm_first, **kw)).eval()


@pytest.mark.parametrize("norm_first", [True, False])
def test_future_target_tokens_do_not_change_earlier_outputs(norm_first: bool) -> None:
    model = tiny(norm_first)
    src = torch.randint(4, 50, (2, 6))
    mask = torch.ones_like(src, dtype=torch.bool)
    tgt = torch.randint(4, 50, (2, 7))
    changed = tgt.clone()
    changed[:, 4:] = torch.randint(4, 50, (2, 3))
    a, _ = model(src, mask, tgt)
    b, _ = model(src, mask, changed)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_padded_source_tokens_do_not_change_outputs() -> None:
    model = tiny()
    src = torch.randint(4, 50, (2, 6))
    mask = torch.ones_like(src, dtype=torch.bool)
    mask[0, 4:] = False
    changed = src.clone()
    changed[0, 4:] = torch.randint(4, 50, (2,))
    tgt = torch.randint(4, 50, (2, 5))
    a, _ = model(src, mask, tgt)
    b, _ = model(changed, mask, tgt)
    torch.testing.assert_close(a, b)
    # The same sentence alone, without padding, gives the same logits.
    alone, _ = model(src[:1, :4], mask[:1, :4], tgt[:1])
    torch.testing.assert_close(a[:1], alone, atol=1e-5, rtol=1e-5)


def test_tied_embeddings_share_one_matrix() -> None:
    model = tiny()
    assert model.generator.proj.weight is model.embedding.weight
    untied = tiny(tie_embeddings=False)
    assert untied.generator.proj.weight is not untied.embedding.weight


def test_gelu_activation_option() -> None:
    model = tiny(activation="gelu")
    src = torch.randint(4, 50, (1, 5))
    logits, _ = model(src, torch.ones_like(src, dtype=torch.bool), src)
    assert logits.shape == (1, 5, 50)


@pytest.mark.parametrize("kw", [{}, {"moe_experts": 2, "moe_top_k": 1}])
def test_every_sublayer_goes_through_add_and_norm(kw: dict[str, object]) -> None:
    """Each layer's sublayers (self-attention, cross-attention, FFN) run inside their
    SublayerConnection once per pass: one Add&Norm path for all of them."""
    model = tiny(**kw)
    calls = {name: 0 for name, m in model.named_modules() if isinstance(m, SublayerConnection)}
    for name, m in model.named_modules():
        if isinstance(m, SublayerConnection):
            m.register_forward_hook(
                lambda _m, _i, _o, name=name: calls.__setitem__(name, calls[name] + 1)
            )
    src = torch.randint(4, 50, (2, 5))
    model(src, torch.ones_like(src, dtype=torch.bool), src)
    assert len(calls) == 2 * 2 + 3 * 2  # 2 encoder layers of 2 sublayers, 2 decoder layers of 3
    assert set(calls.values()) == {1}


def test_checkpoint_keys_and_parameter_order_are_the_shipped_ones() -> None:
    """models/*/model.safetensors and a resumable last.pt name the weights so, and the
    optimiser state in last.pt follows this parameter order: moving code must keep both."""
    attention = [f"{p}.{w}" for p in ("q_proj", "kv_proj", "out_proj") for w in ("weight", "bias")]
    ffn = ["ffn.w1.weight", "ffn.w1.bias", "ffn.w2.weight", "ffn.w2.bias"]

    def norm(prefix: str) -> list[str]:
        return [f"{prefix}.gamma", f"{prefix}.beta"]

    encoder = [f"self_attn.{a}" for a in attention] + ffn
    encoder += norm("attn_sublayer.norm") + norm("ffn_sublayer.norm")
    decoder = [f"{attn}.{a}" for attn in ("self_attn", "cross_attn") for a in attention] + ffn
    decoder += norm("self_sublayer.norm") + norm("cross_sublayer.norm") + norm("ffn_sublayer.norm")
    expected = ["embedding.weight"]
    expected += [f"encoder_layers.{i}.{k}" for i in range(2) for k in encoder]
    expected += [f"decoder_layers.{i}.{k}" for i in range(2) for k in decoder]
    expected += norm("encoder_norm") + norm("decoder_norm")
    tied = tiny()
    assert [name for name, _ in tied.named_parameters()] == [*expected, "generator.proj.bias"]
    assert list(tied.state_dict()) == [*expected, "generator.proj.weight", "generator.proj.bias"]
    untied = tiny(tie_embeddings=False)
    assert [name for name, _ in untied.named_parameters()] == [
        *expected,
        "generator.proj.weight",
        "generator.proj.bias",
        "target_embedding.weight",
    ]
