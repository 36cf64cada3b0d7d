"""The KV cache, greedy and beam search, and a tiny model that learns to copy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model.search import (
    TorchStepDecoder,
    beam_search,
    best_tokens,
    greedy_search,
    pad_batch,
    translate_ids,
)
from model.transformer import Transformer, build_model
from tests.tiny_models import tiny_config

BOS, EOS, PAD = 2, 3, 0


def tiny_model(seed: int = 0, **kw: object) -> Transformer:
    torch.manual_seed(seed)
    return build_model(tiny_config(**{"vocab_size": 40, **kw})).eval()


@pytest.mark.parametrize(
    "kw", [{}, {"norm_first": False}, {"moe_experts": 4, "moe_shared_experts": 1}]
)
def test_cached_decoding_equals_uncached(kw: dict[str, object]) -> None:
    model = tiny_model(**kw)
    src = torch.randint(4, 40, (3, 9))
    src_mask = torch.ones_like(src, dtype=torch.bool)
    src_mask[1, 6:] = False
    tgt = torch.randint(4, 40, (3, 8))
    with torch.no_grad():
        full, _ = model(src, src_mask, tgt)
        memory = model.encode(src, src_mask)
        past, steps = None, []
        for t in range(tgt.size(1)):
            logits, past = model.decode_step(tgt[:, t : t + 1], memory, src_mask, past)
            steps.append(logits)
    assert past is not None and past.length == 8
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


def test_cache_select_keeps_rows_in_order() -> None:
    model = tiny_model()
    src = torch.randint(4, 40, (3, 5))
    mask = torch.ones_like(src, dtype=torch.bool)
    with torch.no_grad():
        memory = model.encode(src, mask)
        _, cache = model.decode_step(torch.full((3, 1), BOS), memory, mask, None)
    picked = cache.select(torch.tensor([2, 0]))
    for a, b in zip(picked.tensors(), cache.tensors(), strict=True):
        torch.testing.assert_close(a, b[:, [2, 0]])


def sources(n: int = 6, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randint(4, 40, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist()
        for _ in range(n)
    ]


def run(model: Transformer, srcs: list[list[int]], beam: int, n_best: int = 1, alpha: float = 0.6):
    decoder = TorchStepDecoder(model)
    ids, mask = pad_batch(srcs, PAD)
    state = decoder.start(ids, mask)
    if beam == 0:
        return greedy_search(decoder, state, len(srcs), bos_id=BOS, eos_id=EOS, max_length=12)
    return beam_search(
        decoder,
        state,
        len(srcs),
        beam_size=beam,
        bos_id=BOS,
        eos_id=EOS,
        max_length=12,
        n_best=n_best,
        alpha=alpha,
    )


def test_beam_one_equals_greedy() -> None:
    model = tiny_model()
    srcs = sources()
    greedy = run(model, srcs, beam=0)
    beam = run(model, srcs, beam=1)
    assert [g[0].tokens for g in greedy] == [b[0].tokens for b in beam]


def test_greedy_is_independent_of_batch_mates() -> None:
    model = tiny_model()
    srcs = sources()
    batched = run(model, srcs, beam=0)
    for i, s in enumerate(srcs):
        assert run(model, [s], beam=0)[0][0].tokens == batched[i][0].tokens


class SelectCounting(TorchStepDecoder):
    """The real decoder, recording the rows of every step and of every select."""

    def __init__(self, model: Transformer) -> None:
        super().__init__(model)
        self.step_rows: list[int] = []
        self.selects: list[tuple[int, int]] = []  # (rows before, rows kept)

    def step_top_k(self, state, tokens, k):  # type: ignore[no-untyped-def]
        self.step_rows.append(len(tokens))
        return super().step_top_k(state, tokens, k)

    def select(self, state, index, sources):  # type: ignore[no-untyped-def]
        self.selects.append((self.step_rows[-1], len(index)))
        return super().select(state, index, sources)


def variable_length_copier(steps: int = 200) -> Transformer:
    """A tiny model trained to copy sequences of 1-8 tokens: its EOS comes at different
    steps for different sentences."""
    torch.manual_seed(0)
    model = tiny_model(vocab_size=16, d_model=64, n_heads=4, d_ff=128, max_length=16)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.98))
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        lengths = torch.randint(1, 9, (64,), generator=g)
        seq = torch.randint(4, 16, (64, 8), generator=g)
        mask = torch.arange(8)[None, :] < lengths[:, None]
        seq = seq.masked_fill(~mask, PAD)
        tgt_in = torch.cat([torch.full((64, 1), BOS), seq], dim=1)
        tgt_out = torch.cat([seq, torch.full((64, 1), PAD)], dim=1)
        tgt_out[torch.arange(64), lengths] = EOS
        logits, _ = model(seq, mask, tgt_in)
        loss = F.cross_entropy(logits.reshape(-1, 16), tgt_out.reshape(-1), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_greedy_drops_finished_rows_together() -> None:
    """Finished rows stay in the batch until they are compact_share of it, then leave in one
    select; the translations are those of dropping every row at its EOS."""
    from model.search import COMPACT_SHARE

    copier = variable_length_copier()
    g = torch.Generator().manual_seed(5)
    srcs = [torch.randint(4, 16, (n,), generator=g).tolist() for n in range(1, 9) for _ in (0, 1)]
    outputs = {}
    decoders = {}
    for share in (1e-9, COMPACT_SHARE):
        decoder = decoders[share] = SelectCounting(copier)
        ids, mask = pad_batch(srcs, PAD)
        outputs[share] = greedy_search(
            decoder,
            decoder.start(ids, mask),
            len(srcs),
            bos_id=BOS,
            eos_id=EOS,
            max_length=12,
            compact_share=share,
        )
    eager, lazy = decoders[1e-9], decoders[COMPACT_SHARE]
    for a, b in zip(outputs[1e-9], outputs[COMPACT_SHARE], strict=True):
        assert a[0].tokens == b[0].tokens
        assert a[0].score == pytest.approx(b[0].score, abs=1e-5)
    assert len(eager.selects) > len(lazy.selects) > 0  # sentences finished at several steps
    for before, kept in lazy.selects:
        assert before - kept >= COMPACT_SHARE * before


def test_beam_returns_sorted_distinct_alternatives_and_scores_them_right() -> None:
    model = tiny_model()
    srcs = sources(3)
    results = run(model, srcs, beam=4, n_best=3)
    for src, hyps in zip(srcs, results, strict=True):
        assert len(hyps) == 3
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == 3
        # The reported log-probability is the model's, recomputed with teacher forcing.
        h = hyps[0]
        tgt = torch.tensor([[BOS, *h.tokens]])
        with torch.no_grad():
            logits, _ = model(torch.tensor([src]), torch.ones(1, len(src), dtype=torch.bool), tgt)
        logp = F.log_softmax(logits, dim=-1)[0]
        ended = len(h.tokens) < 12
        target = h.tokens + ([EOS] if ended else [])
        expected = sum(float(logp[i, t]) for i, t in enumerate(target))
        assert h.log_prob == pytest.approx(expected, abs=1e-4)


def test_beam_finds_at_least_the_greedy_score() -> None:
    """Ranked by log-probability alone (alpha 0, as greedy search ranks), the beam's best is
    never worse than the greedy output. (With a length penalty the beam ranks by another
    score, so log-probabilities would not compare.)"""
    model = tiny_model(seed=3)
    srcs = sources(8, seed=5)
    greedy = run(model, srcs, beam=0)
    beam = run(model, srcs, beam=5, alpha=0.0)
    for g, b in zip(greedy, beam, strict=True):
        assert b[0].log_prob >= g[0].log_prob - 1e-4
    # and it searched: some sentence's best is not greedy's
    assert any(b[0].tokens != g[0].tokens for g, b in zip(greedy, beam, strict=True))


def test_tiny_model_learns_to_copy() -> None:
    """A 2+2-layer model trained for a few hundred steps copies unseen sequences."""
    torch.manual_seed(0)
    model = tiny_model(vocab_size=16, d_model=64, n_heads=4, d_ff=128, max_length=16)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.98))
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        seq = torch.randint(4, 16, (64, 6), generator=g)
        mask = torch.ones_like(seq, dtype=torch.bool)
        tgt_in = torch.cat([torch.full((64, 1), BOS), seq], dim=1)
        tgt_out = torch.cat([seq, torch.full((64, 1), EOS)], dim=1)
        logits, _ = model(seq, mask, tgt_in)
        loss = F.cross_entropy(logits.reshape(-1, 16), tgt_out.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    test = torch.randint(4, 16, (20, 6), generator=torch.Generator().manual_seed(99)).tolist()
    out = translate_ids(model, test, beam_size=1, max_length=10)
    exact = sum(h[0].tokens == s for h, s in zip(out, test, strict=True))
    assert exact >= 18, f"copied {exact}/20 exactly"


def test_best_tokens_equals_max_first_on_ties() -> None:
    rows = torch.log_softmax(torch.randn(5, 300, generator=torch.Generator().manual_seed(3)), -1)
    rows[2, 17] = rows[2, 250] = rows[2].max() + 1.0  # a tie: the first column wins
    values, tokens = best_tokens(rows)
    want_values, want_tokens = rows.max(dim=-1)
    assert torch.equal(values, want_values) and torch.equal(tokens, want_tokens)
    assert int(tokens[2]) == 17
