"""Greedy and beam search as batch objects, over any backend that can take one decoding step.

A backend implements `StepDecoder`: `step_top_k` feeds the last token of every row and
returns each row's k best log-probabilities and tokens (all a search step needs: 1 for
greedy, 2K for beam search), `select` keeps and reorders rows of its state, `concat` joins
states. The search code is shared by the PyTorch model and the ONNX Runtime graphs, so both
produce the same tokens.

A batch (`GreedyBatch`, `BeamBatch`) owns everything per row and per sentence: the decoder
state (the KV cache), the tokens so far, scores and finished hypotheses, each sentence's
output budget and options, and a handle back to whoever asked for it (`Sentence.owner`).
`step()` runs one decoder call for every live row and returns the sentences it finished;
`filter(keep)` drops sentences from every array together; `concatenate(other)` joins a
batch of newly encoded sentences. Offline decoding (`search`, `Engine.generate`) runs one
batch until it is empty; the service's continuous scheduler (service/scheduler.py) admits
sentences into running batches between steps. Rows sit at different positions then: each
backend keeps a position per row and a left-padded self-attention cache (see
`Transformer.decode_step`), so a sentence decodes the same whatever shares its batch.

The batch tells the backend how beams map to rows: the rows of a sentence are contiguous,
and `select` is told which source entries its rows decode (or that they did not change),
so the ONNX engine stores the source side once per sentence, not once per beam.

The bookkeeping is numpy on a handful of rows: a torch op costs microseconds of dispatch
whatever its size, numpy's a fraction of that, and a step runs about ten of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from torch import Tensor

from model.transformer import KVCache, Transformer

State = TypeVar("State")


class StepDecoder(Protocol[State]):
    """One decoding step for a batch of rows, and row selection and joining on its state."""

    def step(self, state: State, tokens: Tensor) -> tuple[Tensor, State]:
        """tokens (N,) -> log-probabilities (N, V) as float32 on the CPU, and the new state."""
        ...

    def step_top_k(self, state: State, tokens: Tensor, k: int) -> tuple[Tensor, Tensor, State]:
        """As step, but only each row's k largest log-probabilities (N, k) float32 and their
        tokens (N, k) int64 on the CPU, largest first, ties to the lower token id."""
        ...

    def select(self, state: State, rows: Tensor, sources: Tensor | None) -> State:
        """Keep the rows in `rows` (N',), in that order.

        sources: None when the rows still decode the same source entries in the same order
        (beams widened or reordered within their sentence); else the source entries kept,
        in order, the rows of each contiguous and as many for each.
        """
        ...

    def concat(self, states: Sequence[State]) -> State:
        """One state holding the rows (and source entries) of each, in order."""
        ...


@dataclass
class Hypothesis:
    """A finished output: token ids without BOS/EOS, its log-probability and ranking score."""

    tokens: list[int]
    log_prob: float
    score: float


@dataclass
class Sentence:
    """One sentence to decode: its source, output budget, options, and its request's handle."""

    source: Sequence[int]
    max_length: int
    n_best: int = 1
    alpha: float = 0.6
    owner: Any = None


Finished = tuple[Any, list[Hypothesis]]  # (Sentence.owner, its n-best, best first)


def best_tokens(log_probs: Tensor) -> tuple[Tensor, Tensor]:
    """Per row, the largest log-probability and its token (the first one on ties).

    As `log_probs.max(dim=-1)`; on the CPU numpy's vectorized argmax is much faster than
    torch's reduction at one thread (docs/decisions.md).
    """
    if log_probs.device.type != "cpu":
        return log_probs.max(dim=-1)
    tokens = torch.from_numpy(log_probs.numpy().argmax(axis=-1))
    return log_probs.gather(1, tokens[:, None])[:, 0], tokens


def rows_top_k(log_probs: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Per row, the k largest log-probabilities and their tokens, largest first: the
    reference `step_top_k` for a backend that computes the whole (N, V) matrix."""
    if k == 1:
        values, tokens = best_tokens(log_probs)
        return values[:, None], tokens[:, None]
    values, tokens = log_probs.topk(k, dim=-1)
    return values, tokens


# Greedy search drops finished rows once they are this share of its batch (GreedyBatch's
# compact_share; the A/B that chose it: docs/decisions.md).
COMPACT_SHARE = 0.25


def length_penalty(length: int | np.ndarray, alpha: float | np.ndarray) -> Any:
    """GNMT length penalty ((5 + |Y|) / 6) ^ alpha; alpha 0 ranks by raw log-probability."""
    return ((5.0 + length) / 6.0) ** alpha


class SearchBatch(ABC):
    """Sentences decoding together: the state of every row, and what each sentence asked for."""

    # rows per sentence while decoding (1 for greedy, the beam size for beam search)
    width: int

    def __init__(self, decoder: StepDecoder[Any], state: Any, sentences: Sequence[Sentence]):
        self.decoder = decoder
        self.state = state
        n = len(sentences)
        self.owners: list[Any] = [s.owner for s in sentences]
        self.budget = np.array([s.max_length for s in sentences], dtype=np.int64).reshape(n)
        if n and int(self.budget.min()) < 1:
            raise ValueError("every sentence needs an output budget of at least one token")
        self.alpha = np.array([s.alpha for s in sentences], dtype=np.float64).reshape(n)
        self.n_best = np.array([s.n_best for s in sentences], dtype=np.int64).reshape(n)
        self.src_len = np.array([max(1, len(s.source)) for s in sentences], dtype=np.int64)
        self.src_len = self.src_len.reshape(n)
        self.length = np.zeros(n, dtype=np.int64)  # tokens decoded so far, per sentence

    # ----- what a scheduler reads -----
    @property
    @abstractmethod
    def sentences(self) -> int:
        """Sentences still decoding."""

    @property
    @abstractmethod
    def rows(self) -> int:
        """Rows in the decoder state (finished greedy rows included until compaction)."""

    @property
    def kv_tokens(self) -> int:
        """Cache positions held: rows x the self-attention past, source entries x the source
        width (the padded layout the backends keep)."""
        if not len(self.length):
            return 0
        return self.rows * int(self.length.max()) + len(self.length) * int(self.src_len.max())

    def reserved_kv_tokens(self) -> int:
        """The most cache positions this batch can come to hold before it is empty: every
        row at the longest budget (the past is trimmed to the longest live row)."""
        if not len(self.length):
            return 0
        rows = len(self.length) * self.width
        return rows * int(self.budget.max()) + len(self.length) * int(self.src_len.max())

    @property
    def live_owners(self) -> list[Any]:
        return [o for o in self.owners if o is not None]

    # ----- the three calls -----
    @abstractmethod
    def step(self) -> list[Finished]:
        """One decoder call for every row; returns the sentences that finished."""

    @abstractmethod
    def filter(self, keep: np.ndarray) -> None:
        """Keep the sentence slots in `keep` (indices into this batch's slots), in order."""

    @abstractmethod
    def concatenate(self, other: SearchBatch) -> None:
        """Append the sentences of another batch of the same kind and width."""

    @abstractmethod
    def drop(self, owners: set[int]) -> int:
        """Stop decoding the sentences whose owner's id() is in owners; returns how many."""

    def run(self) -> list[Finished]:
        """Step until every sentence finished (offline decoding)."""
        done: list[Finished] = []
        while self.sentences:
            done += self.step()
        return done

    def _filter_sentence_arrays(self, keep: np.ndarray) -> None:
        self.owners = [self.owners[i] for i in keep.tolist()]
        for name in ("budget", "alpha", "n_best", "src_len", "length"):
            setattr(self, name, getattr(self, name)[keep])

    def _concat_sentence_arrays(self, other: SearchBatch) -> None:
        self.owners = self.owners + other.owners
        for name in ("budget", "alpha", "n_best", "src_len", "length"):
            setattr(self, name, np.concatenate([getattr(self, name), getattr(other, name)]))


def _padded_columns(history: np.ndarray, width: int) -> np.ndarray:
    if history.shape[1] >= width:
        return history
    return np.pad(history, ((0, 0), (0, width - history.shape[1])))


class GreedyBatch(SearchBatch):
    """Pick the most likely token at each step until each sentence's EOS or budget.

    A finished sentence's row stays in the batch (its tokens are ignored) until finished
    rows make up `compact_share` of it, or until a finished row would pass its own budget
    (so no row's position outgrows the positional table or the cache reservation); then
    one `select` drops them all. Dropping each row as it finishes cost a cache copy per
    finish, dearer than carrying a few idle rows a few steps.
    """

    width = 1

    def __init__(
        self,
        decoder: StepDecoder[Any],
        state: Any,
        sentences: Sequence[Sentence],
        *,
        bos_id: int,
        eos_id: int,
        compact_share: float = COMPACT_SHARE,
    ) -> None:
        super().__init__(decoder, state, sentences)
        n = len(sentences)
        self.eos_id = eos_id
        self.compact_share = compact_share
        self.live = np.ones(n, dtype=bool)  # rows whose sentence is not finished
        self.tokens = np.full(n, bos_id, dtype=np.int64)
        self.history = np.zeros((n, int(self.budget.max()) if n else 1), dtype=np.int64)
        self.log_prob = np.zeros(n, dtype=np.float32)

    @property
    def sentences(self) -> int:
        return int(np.count_nonzero(self.live))

    @property
    def rows(self) -> int:
        return len(self.live)

    def reserved_kv_tokens(self) -> int:
        live = self.live
        if not live.any():
            return 0
        rows = int(np.count_nonzero(live))
        return rows * int(self.budget[live].max()) + rows * int(self.src_len[live].max())

    def step(self) -> list[Finished]:
        if not self.live.any():
            return []
        best, top, self.state = self.decoder.step_top_k(
            self.state, torch.from_numpy(self.tokens), 1
        )
        tokens = self.tokens = top.numpy()[:, 0]
        self.log_prob += best.numpy()[:, 0]
        # Every row (finished or not) is below its budget before a step: see _compact.
        self.history[np.arange(len(tokens)), self.length] = tokens
        self.length += 1
        is_eos = tokens == self.eos_id
        done = self.live & (is_eos | (self.length >= self.budget))
        finished: list[Finished] = []
        if done.any():
            for row in np.flatnonzero(done).tolist():
                n = int(self.length[row])
                # the sentence's tokens without its EOS (a budget may end without one)
                seq = self.history[row, : n - 1 if is_eos[row] else n].tolist()
                lp = float(self.log_prob[row])
                score = lp / float(length_penalty(n, float(self.alpha[row])))
                finished.append((self.owners[row], [Hypothesis(seq, lp, score)]))
                self.owners[row] = None
            self.live &= ~done
        self._compact()
        return finished

    def _compact(self, force: bool = False) -> None:
        kept = int(np.count_nonzero(self.live))
        if kept == len(self.live):
            return
        if (
            force
            or kept == 0
            or kept <= (1 - self.compact_share) * len(self.live)
            or bool((self.length >= self.budget).any())
        ):
            self.filter(np.flatnonzero(self.live))

    def filter(self, keep: np.ndarray) -> None:
        if len(keep) == len(self.live):
            return
        index = torch.from_numpy(keep)
        if len(keep):
            self.state = self.decoder.select(self.state, index, index)
        self._filter_sentence_arrays(keep)
        self.live, self.tokens = self.live[keep], self.tokens[keep]
        self.history, self.log_prob = self.history[keep], self.log_prob[keep]

    def concatenate(self, other: SearchBatch) -> None:
        if not isinstance(other, GreedyBatch):
            raise TypeError("a greedy batch joins greedy batches only")
        self._compact(force=True)
        other._compact(force=True)
        if not len(other.live):
            return
        if not len(self.live):
            self.__dict__.update(other.__dict__)
            return
        self.state = self.decoder.concat([self.state, other.state])
        self._concat_sentence_arrays(other)
        width = max(self.history.shape[1], other.history.shape[1])
        self.history = np.concatenate(
            [_padded_columns(self.history, width), _padded_columns(other.history, width)]
        )
        self.live = np.concatenate([self.live, other.live])
        self.tokens = np.concatenate([self.tokens, other.tokens])
        self.log_prob = np.concatenate([self.log_prob, other.log_prob])

    def drop(self, owners: set[int]) -> int:
        gone = [i for i, o in enumerate(self.owners) if o is not None and id(o) in owners]
        for row in gone:
            self.owners[row] = None
            self.live[row] = False
        if gone:
            self._compact()
        return len(gone)


class BeamBatch(SearchBatch):
    """Keep the `width` best prefixes per sentence; each sentence returns its n_best.

    A sentence stops once it has `width` finished hypotheses and no live prefix can beat
    them at its current length, or at its budget; its rows then leave the batch at once
    (beam search selects rows every step anyway).

    The first step has one row per sentence: its K beams would all be the same BOS prefix,
    so a sentence widens to K rows only when its first step picks K tokens. A newly encoded
    batch therefore takes its first step alone (`widen`) before it joins a running one.
    """

    def __init__(
        self,
        decoder: StepDecoder[Any],
        state: Any,
        sentences: Sequence[Sentence],
        *,
        width: int,
        bos_id: int,
        eos_id: int,
    ) -> None:
        super().__init__(decoder, state, sentences)
        n = len(sentences)
        self.width = width
        self.eos_id = eos_id
        self.n_best = np.minimum(np.maximum(self.n_best, 1), width)
        self.beams = 1  # rows per sentence now: 1 before the first step, then width
        self.scores = np.zeros((n, 1), dtype=np.float32)  # (sentences, beams)
        self.tokens = np.full(n, bos_id, dtype=np.int64)
        self.history = np.zeros((n, int(self.budget.max()) if n else 1), dtype=np.int64)
        self.finished: list[list[Hypothesis]] = [[] for _ in range(n)]

    @property
    def sentences(self) -> int:
        return len(self.owners)

    @property
    def rows(self) -> int:
        return len(self.tokens)

    @property
    def widened(self) -> bool:
        return self.beams == self.width

    def widen(self) -> list[Finished]:
        """The first step of a fresh batch, so that it can join a running one."""
        return [] if self.widened or not self.sentences else self.step()

    def step(self) -> list[Finished]:
        n = self.sentences
        if not n:
            return []
        k, beams = self.width, self.beams
        # The best 2K extensions of a sentence are among the best 2K of each of its beams,
        # so each row's best 2K is all the step returns, not the whole (n * beams, V).
        row_scores, row_tokens, self.state = self.decoder.step_top_k(
            self.state, torch.from_numpy(self.tokens), 2 * k
        )
        sentence = np.arange(n)[:, None]  # row index for picking per sentence
        candidates = (self.scores.reshape(-1, 1) + row_scores.numpy()).reshape(n, beams * 2 * k)
        # the 2K best per sentence, best first, ties to the earlier candidate
        top_index = np.argsort(-candidates, axis=1, kind="stable")[:, : 2 * k]  # (n, 2K)
        top_scores = candidates[sentence, top_index]
        top_beam = top_index // (2 * k)
        top_token = row_tokens.numpy().reshape(n, -1)[sentence, top_index]
        step = self.length  # (n,) tokens before this one
        penalty = length_penalty(step + 1, self.alpha)  # (n,)
        is_eos = top_token == self.eos_id

        ended = is_eos[:, :k] & (top_scores[:, :k] > -np.inf)
        for i, r in zip(*np.nonzero(ended), strict=True):
            row = i * beams + int(top_beam[i, r])
            raw = float(top_scores[i, r])
            hyp = Hypothesis(self.history[row, : step[i]].tolist(), raw, raw / float(penalty[i]))
            self.finished[i].append(hyp)

        # The K best candidates that do not end the sentence continue as the next beams.
        pick = np.argsort(is_eos, axis=1, kind="stable")[:, :k]
        next_scores = top_scores[sentence, pick]
        next_beam = top_beam[sentence, pick]
        next_token = top_token[sentence, pick]
        rows = sentence * beams + next_beam  # (n, K)

        last = step + 1 >= self.budget
        best_live = next_scores[:, 0] / penalty
        done = np.zeros(n, dtype=bool)
        for i in range(n):
            if last[i]:
                for b in range(k):
                    seq = self.history[rows[i, b], : step[i]].tolist() + [int(next_token[i, b])]
                    raw = float(next_scores[i, b])
                    self.finished[i].append(Hypothesis(seq, raw, raw / float(penalty[i])))
                done[i] = True
            else:
                done[i] = _sentence_done(self.finished[i], k, float(best_live[i]))
        out: list[Finished] = [
            (self.owners[i], self._n_best(i)) for i in np.flatnonzero(done).tolist()
        ]
        keep = np.flatnonzero(~done)
        if not len(keep):
            self._filter_sentence_arrays(keep)
            self.finished, self.tokens = [], self.tokens[:0]
            self.scores = np.zeros((0, k), dtype=np.float32)
            self.history = self.history[:0]
            self.beams = k
            return out
        kept_rows = rows[keep].reshape(-1)
        # The rows of each kept sentence stay contiguous; the source entries change only
        # when a sentence left.
        sources = None if len(keep) == n else torch.from_numpy(keep)
        self.state = self.decoder.select(self.state, torch.from_numpy(kept_rows), sources)
        self.history = self.history[kept_rows]
        self.tokens = next_token[keep].reshape(-1)
        self.history[np.arange(len(kept_rows)), np.repeat(step[keep], k)] = self.tokens
        self.scores = next_scores[keep]
        self.finished = [self.finished[i] for i in keep.tolist()]
        self._filter_sentence_arrays(keep)
        self.length += 1
        self.beams = k
        return out

    def _n_best(self, i: int) -> list[Hypothesis]:
        ranked = sorted(self.finished[i], key=lambda h: h.score, reverse=True)
        return ranked[: int(self.n_best[i])]

    def filter(self, keep: np.ndarray) -> None:
        n = self.sentences
        if len(keep) == n:
            return
        if len(keep):
            rows = (keep[:, None] * self.beams + np.arange(self.beams)).reshape(-1)
            self.state = self.decoder.select(
                self.state, torch.from_numpy(rows), torch.from_numpy(keep)
            )
        else:
            rows = keep
        self.tokens, self.history = self.tokens[rows], self.history[rows]
        self.scores = self.scores[keep]
        self.finished = [self.finished[i] for i in keep.tolist()]
        self._filter_sentence_arrays(keep)

    def concatenate(self, other: SearchBatch) -> None:
        if not isinstance(other, BeamBatch) or other.width != self.width:
            raise TypeError("a beam batch joins beam batches of its width only")
        if not other.sentences:
            return
        if not self.sentences:
            self.__dict__.update(other.__dict__)
            return
        if not (self.widened and other.widened):
            raise ValueError("beam batches join once both took their first step (widen)")
        self.state = self.decoder.concat([self.state, other.state])
        self._concat_sentence_arrays(other)
        width = max(self.history.shape[1], other.history.shape[1])
        self.history = np.concatenate(
            [_padded_columns(self.history, width), _padded_columns(other.history, width)]
        )
        self.tokens = np.concatenate([self.tokens, other.tokens])
        self.scores = np.concatenate([self.scores, other.scores])
        self.finished = self.finished + other.finished

    def drop(self, owners: set[int]) -> int:
        keep = np.array(
            [i for i, o in enumerate(self.owners) if id(o) not in owners], dtype=np.int64
        )
        gone = self.sentences - len(keep)
        if gone:
            self.filter(keep)
        return gone


def _sentence_done(finished: list[Hypothesis], beam_size: int, best_live_score: float) -> bool:
    if len(finished) < beam_size:
        return False
    kth_best = sorted((h.score for h in finished), reverse=True)[beam_size - 1]
    return best_live_score <= kth_best


def batch_width(beam_size: int, n_best: int = 1) -> int:
    """Rows per sentence: 1 (greedy) for beam size 1 unless alternatives are asked for."""
    return 1 if beam_size <= 1 and n_best <= 1 else max(beam_size, n_best)


def new_batch(
    decoder: StepDecoder[Any],
    state: Any,
    sentences: Sequence[Sentence],
    *,
    width: int,
    bos_id: int,
    eos_id: int,
    compact_share: float = COMPACT_SHARE,
) -> SearchBatch:
    """A greedy batch for width 1 (dropping finished rows at `compact_share`), else a beam
    batch of that width."""
    if width == 1:
        return GreedyBatch(
            decoder, state, sentences, bos_id=bos_id, eos_id=eos_id, compact_share=compact_share
        )
    return BeamBatch(decoder, state, sentences, width=width, bos_id=bos_id, eos_id=eos_id)


def _offline(batch: SearchBatch, batch_size: int) -> list[list[Hypothesis]]:
    results: list[list[Hypothesis]] = [[] for _ in range(batch_size)]
    for owner, hyps in batch.run():
        results[owner] = hyps
    return results


def _sentences(
    batch_size: int, max_length: int | Sequence[int], alpha: float, n_best: int
) -> list[Sentence]:
    budgets = [max_length] * batch_size if isinstance(max_length, int) else list(max_length)
    return [Sentence((), budgets[i], n_best, alpha, i) for i in range(batch_size)]


def greedy_search(
    decoder: StepDecoder[State],
    state: State,
    batch_size: int,
    *,
    bos_id: int,
    eos_id: int,
    max_length: int | Sequence[int],
    alpha: float = 0.0,
    compact_share: float = COMPACT_SHARE,
) -> list[list[Hypothesis]]:
    """Greedy search of a batch of batch_size sentences to the end (see GreedyBatch)."""
    return search(
        decoder,
        state,
        batch_size,
        beam_size=1,
        bos_id=bos_id,
        eos_id=eos_id,
        max_length=max_length,
        alpha=alpha,
        compact_share=compact_share,
    )


def beam_search(
    decoder: StepDecoder[State],
    state: State,
    batch_size: int,
    *,
    beam_size: int,
    bos_id: int,
    eos_id: int,
    max_length: int | Sequence[int],
    alpha: float = 0.6,
    n_best: int = 1,
) -> list[list[Hypothesis]]:
    """Beam search of a batch to the end, even at beam size 1; the n_best finished outputs
    (see BeamBatch)."""
    n_best = max(1, min(n_best, beam_size))
    sentences = _sentences(batch_size, max_length, alpha, n_best)
    batch = BeamBatch(decoder, state, sentences, width=beam_size, bos_id=bos_id, eos_id=eos_id)
    return _offline(batch, batch_size)


def search(
    decoder: StepDecoder[State],
    state: State,
    batch_size: int,
    *,
    beam_size: int,
    bos_id: int,
    eos_id: int,
    max_length: int | Sequence[int],
    alpha: float = 0.6,
    n_best: int = 1,
    compact_share: float = COMPACT_SHARE,
) -> list[list[Hypothesis]]:
    """Greedy search for beam size 1 (unless alternatives are asked for), else beam search
    of max(beam_size, n_best) beams; each sentence's n_best to the end."""
    width = batch_width(beam_size, n_best)
    sentences = _sentences(batch_size, max_length, alpha, max(1, min(n_best, width)))
    batch = new_batch(
        decoder,
        state,
        sentences,
        width=width,
        bos_id=bos_id,
        eos_id=eos_id,
        compact_share=compact_share,
    )
    return _offline(batch, batch_size)


# ----- the PyTorch backend -----
@dataclass
class TorchState:
    """Decoder state of the PyTorch backend: per row its source mask, KV cache and position.

    The self-attention past is left-padded to the longest row's (positions); the source
    side is right-padded to the longest source, one entry per row (beams included).
    """

    src_mask: Tensor  # (N, S)
    cache: KVCache
    positions: Tensor  # (N,) int64: tokens each row has decoded


def _pad_dim(t: Tensor, dim: int, before: int, after: int, edge: bool = False) -> Tensor:
    """t padded along dim with zeros (or copies of its last slice, edge)."""
    if not before and not after:
        return t
    parts = []
    if before:
        shape = list(t.shape)
        shape[dim] = before
        parts.append(t.new_zeros(shape))
    parts.append(t)
    if after:
        if edge:
            last = t.narrow(dim, t.size(dim) - 1, 1)
            parts.append(last.expand(*[after if d == dim else -1 for d in range(t.dim())]))
        else:
            shape = list(t.shape)
            shape[dim] = after
            parts.append(t.new_zeros(shape))
    return torch.cat(parts, dim=dim)


class TorchStepDecoder:
    """StepDecoder over the PyTorch model, using its explicit KV cache."""

    def __init__(self, model: Transformer) -> None:
        self.model = model

    @torch.inference_mode()
    def start(self, src_ids: Tensor, src_mask: Tensor) -> TorchState:
        """Encode a batch and compute the cross-attention keys/values once."""
        memory = self.model.encode(src_ids, src_mask)
        positions = torch.zeros(src_ids.size(0), dtype=torch.long, device=src_ids.device)
        return TorchState(src_mask, self.model.empty_cache(memory), positions)

    @torch.inference_mode()
    def step(self, state: TorchState, tokens: Tensor) -> tuple[Tensor, TorchState]:
        logits, cache = self.model.decode_step(
            tokens[:, None], None, state.src_mask, state.cache, positions=state.positions
        )
        log_probs = torch.log_softmax(logits[:, -1].float(), dim=-1)
        return log_probs, TorchState(state.src_mask, cache, state.positions + 1)

    @torch.inference_mode()
    def select(self, state: TorchState, rows: Tensor, sources: Tensor | None) -> TorchState:
        # The source side is stored per row here: `sources` needs no separate handling.
        positions = state.positions.index_select(0, rows)
        cache = state.cache.select(rows)
        src_mask = state.src_mask.index_select(0, rows)
        past = cache.length
        longest = int(positions.max()) if len(positions) else 0
        if longest < past:  # the longest rows left: drop the padding no row needs
            cache = KVCache(
                cache.self_k[:, :, :, past - longest :],
                cache.self_v[:, :, :, past - longest :],
                cache.cross_k,
                cache.cross_v,
            )
        width = max(1, int(src_mask.sum(dim=1).max())) if len(rows) else 1
        if width < src_mask.size(1):
            cache = KVCache(
                cache.self_k,
                cache.self_v,
                cache.cross_k[:, :, :, :width],
                cache.cross_v[:, :, :, :width],
            )
            src_mask = src_mask[:, :width]
        return TorchState(src_mask, cache, positions)

    @torch.inference_mode()
    def concat(self, states: Sequence[TorchState]) -> TorchState:
        past = max(s.cache.length for s in states)
        width = max(s.src_mask.size(1) for s in states)
        masks, parts = [], []
        for s in states:
            p, w = past - s.cache.length, width - s.src_mask.size(1)
            masks.append(_pad_dim(s.src_mask, 1, 0, w))
            # past: zeros on the left (masked by position); cross: copies of the last slot,
            # masked, so a fully masked source still averages the same values
            parts.append(
                (
                    _pad_dim(s.cache.self_k, 3, p, 0),
                    _pad_dim(s.cache.self_v, 3, p, 0),
                    _pad_dim(s.cache.cross_k, 3, 0, w, edge=True),
                    _pad_dim(s.cache.cross_v, 3, 0, w, edge=True),
                )
            )
        cache = KVCache(*(torch.cat([p[i] for p in parts], dim=1) for i in range(4)))
        positions = torch.cat([s.positions for s in states])
        return TorchState(torch.cat(masks), cache, positions)

    def step_top_k(
        self, state: TorchState, tokens: Tensor, k: int
    ) -> tuple[Tensor, Tensor, TorchState]:
        log_probs, state = self.step(state, tokens)
        values, top = rows_top_k(log_probs, k)
        return values, top, state


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-padded (B, S) ids and their mask; an empty sequence keeps one padded slot."""
    width = max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
    return ids, ids != pad_id


def translate_ids(
    model: Transformer,
    sources: Sequence[Sequence[int]],
    *,
    beam_size: int = 1,
    max_length: int = 128,
    alpha: float = 0.6,
    n_best: int = 1,
    batch_size: int = 64,
) -> list[list[Hypothesis]]:
    """Translate source id sequences with the PyTorch model, batching by length."""
    config = model.config
    max_length = min(max_length, config.max_length - 1)
    sources = [s[: config.max_length - 1] for s in sources]
    decoder = TorchStepDecoder(model)
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    results: list[list[Hypothesis]] = [[] for _ in sources]
    was_training = model.training
    model.eval()
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        src_ids, src_mask = pad_batch([sources[i] for i in chunk], config.pad_id)
        state = decoder.start(src_ids, src_mask)
        hyps = search(
            decoder,
            state,
            len(chunk),
            beam_size=beam_size,
            bos_id=config.bos_id,
            eos_id=config.eos_id,
            max_length=max_length,
            alpha=alpha,
            n_best=n_best,
        )
        for i, h in zip(chunk, hyps, strict=True):
            results[i] = h
    model.train(was_training)
    return results
