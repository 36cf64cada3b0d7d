"""The engine interface: synchronous, HTTP-agnostic, one implementation per backend.

An engine translates a batch of texts, and also exposes the batch-level calls a scheduler
drives one decoding step at a time: `start` (encode a batch), `step` (one token for every
row), `select` (keep/reorder rows) and `concat` (join the rows of several states, at any
positions). Greedy and beam search live in `model.search` as batch objects and run
unchanged over any engine, offline (`generate`) and in the service's continuous scheduler.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from model.search import (
    Hypothesis,
    SearchBatch,
    Sentence,
    new_batch,
    rows_top_k,
    search,
)
from model.tokenizer import Tokenizer

# model.search.search's signature: (decoder, state, batch_size, *, beam_size, bos_id, eos_id,
# max_length, alpha, n_best) -> each sentence's n-best hypotheses
SearchFn = Callable[..., list[list[Hypothesis]]]

BACKENDS = ("onnx", "torch")
DEVICES = ("cpu", "cuda")


@dataclass
class Alternative:
    text: str
    score: float


@dataclass
class Translation:
    """One translated text: the best output and, if asked for, the next best ones."""

    text: str
    tokens: list[int]
    score: float
    alternatives: list[Alternative] = field(default_factory=list)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with n torch intra-op threads (the setting is process-wide)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# A share's decoding time in row-steps: about as many steps as its longest source has tokens
# (plus SHARE_STEP_SLACK), each costing its sentences plus an overhead of SHARE_STEP_OVERHEAD
# sentences' worth of fixed work (graph runs, the search's bookkeeping). The A/B that chose 4
# is in docs/decisions.md.
SHARE_STEP_OVERHEAD = 4
SHARE_STEP_SLACK = 2


def share_cost(longest: int, sentences: int, overhead: int = SHARE_STEP_OVERHEAD) -> int:
    """Estimated decoding time of a share: its longest source and its sentence count."""
    return (longest + SHARE_STEP_SLACK) * (sentences + overhead)


def stream_shares(
    lengths: Sequence[int], streams: int, *, overhead: int = SHARE_STEP_OVERHEAD
) -> list[list[int]]:
    """Split a batch into at most `streams` shares that take about the same time.

    The sentences are sorted by length and cut into contiguous runs, so each share decodes
    sentences of similar length (little padding, rows that finish together), and the cuts
    minimize the largest share_cost: shares of short sentences take more of them. The
    smallest feasible bound is found by bisection, each bound packed greedily from the
    shortest sentences up (the least number of shares under it, since a share's cost only
    grows as it takes the next sentence).
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    if streams <= 1 or len(order) <= 1:
        return [order]
    ordered = [lengths[i] for i in order]

    def cut(bound: int) -> list[list[int]]:
        shares, start = [], 0
        for end in range(1, len(order)):
            if share_cost(ordered[end], end + 1 - start, overhead) > bound:
                shares.append(order[start:end])
                start = end
        shares.append(order[start:])
        return shares

    low = share_cost(ordered[-1], 1, overhead)  # every sentence fits alone
    high = share_cost(ordered[-1], len(order), overhead)  # one share fits all
    while low < high:
        middle = (low + high) // 2
        if len(cut(middle)) <= streams:
            high = middle
        else:
            low = middle + 1
    return cut(low)


class Engine(ABC):
    """A loaded model for one language pair on one backend."""

    backend: str
    device: str
    precision: str
    # torch intra-op threads while searching; None leaves torch's setting alone. An engine
    # whose model runs outside torch sets 1: the search's small torch ops gain nothing from
    # threads, and torch's pool competes for the cores with the runtime's own.
    search_threads: int | None = None
    # Batches decoded at once, each a share of the sentences of one call, each in its own
    # thread. ONNX Runtime releases the GIL while a graph runs, so on a CPU two streams of
    # one thread keep both cores busy where one stream of two threads leaves a core idle
    # during the search's own work and each op's thread hand-off (see OnnxEngine).
    streams: int = 1
    _pool: ThreadPoolExecutor | None = None

    def __init__(
        self,
        *,
        tokenizer: Tokenizer,
        source_lang: str,
        target_lang: str,
        version: str,
        bos_id: int,
        eos_id: int,
        pad_id: int,
        max_positions: int,
    ) -> None:
        self.tokenizer = tokenizer
        self.source_lang = source_lang
        self.target_lang = target_lang
        self.version = version
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.pad_id = pad_id
        self.max_positions = max_positions

    @property
    def pair(self) -> str:
        return f"{self.source_lang}-{self.target_lang}"

    # ----- the batch-level calls a scheduler drives -----
    @abstractmethod
    def start(self, sources: Sequence[Sequence[int]]) -> Any:
        """Encode a batch of source id sequences; returns the decoder state of its rows."""

    @abstractmethod
    def step(self, state: Any, tokens: Tensor) -> tuple[Tensor, Any]:
        """Feed one token per row (N,); returns log-probabilities (N, V) float32 and the state."""

    @abstractmethod
    def select(self, state: Any, rows: Tensor, sources: Tensor | None) -> Any:
        """Keep the rows in `rows`, in that order (drop finished sentences, follow beams).

        sources: None when the rows decode the same source entries as before (beams
        widened or reordered within their sentence), else the source entries kept, in
        order, each with its rows contiguous and as many rows for each (the search says
        how beams map to rows; see model.search.StepDecoder).
        """

    @abstractmethod
    def concat(self, states: Sequence[Any]) -> Any:
        """Join states (rows at any positions, sources of any lengths) into one, in order."""

    def step_top_k(self, state: Any, tokens: Tensor, k: int) -> tuple[Tensor, Tensor, Any]:
        """As step, but only each row's k best log-probabilities (N, k) and tokens (N, k),
        largest first, ties to the lower token id: what the search takes from a step."""
        log_probs, state = self.step(state, tokens)
        values, top = rows_top_k(log_probs, k)
        return values, top, state

    def warmup(self) -> None:
        """Run one tiny greedy and beam search so the first request pays no start-up cost."""
        self.generate([[self.eos_id + 1] * 4], beam_size=1, max_length=3)
        self.generate([[self.eos_id + 1] * 4], beam_size=2, max_length=3)
        # and what the continuous scheduler adds: rows at different positions and sources
        # of different lengths joined into one running batch
        token = self.eos_id + 1
        running = self.new_batch(self.sentences([[token] * 4], max_length=3), 1)
        running.step()
        running.concatenate(self.new_batch(self.sentences([[token] * 2], max_length=3), 1))
        running.step()

    # ----- whole translations -----
    def max_length_for(self, source_len: int) -> int:
        """Default output budget: twice the source plus ten, inside the positional table."""
        return min(2 * source_len + 10, self.max_positions - 1)

    def budget(self, source_len: int, max_length: int | None) -> int:
        """A sentence's output budget: max_length if given, else max_length_for its source;
        within the positional table either way."""
        return min(max_length or self.max_length_for(source_len), self.max_positions - 1)

    def sentences(
        self,
        sources: Sequence[Sequence[int]],
        *,
        max_length: int | None = None,
        num_alternatives: int = 0,
        alpha: float = 0.6,
        owners: Sequence[Any] | None = None,
    ) -> list[Sentence]:
        """The search's view of sources: each with its own budget (so a sentence's output
        never depends on its batch mates) and options."""
        return [
            Sentence(
                s,
                self.budget(len(s), max_length),
                1 + num_alternatives,
                alpha,
                i if owners is None else owners[i],
            )
            for i, s in enumerate(sources)
        ]

    def new_batch(self, sentences: Sequence[Sentence], width: int) -> SearchBatch:
        """Encode sentences into a fresh search batch of `width` rows per sentence."""
        state = self.start([s.source for s in sentences])
        return new_batch(
            self, state, sentences, width=width, bos_id=self.bos_id, eos_id=self.eos_id
        )

    def generate(
        self,
        sources: Sequence[Sequence[int]],
        *,
        beam_size: int = 4,
        max_length: int | None = None,
        num_alternatives: int = 0,
        alpha: float = 0.6,
        search_fn: SearchFn = search,
    ) -> list[list[Hypothesis]]:
        """Token-level search for one batch: n-best hypotheses per source. search_fn runs
        the search over each share (another revision's, to compare searches on one engine)."""
        if not sources:
            return []
        budgets = [self.budget(len(s), max_length) for s in sources]
        results: list[list[Hypothesis]] = [[] for _ in sources]

        def run(share: list[int]) -> list[list[Hypothesis]]:
            return self._search(
                [sources[i] for i in share],
                beam_size=beam_size,
                max_length=[budgets[i] for i in share],
                alpha=alpha,
                n_best=1 + num_alternatives,
                search_fn=search_fn,
            )

        with torch_threads(self.search_threads):
            shares = stream_shares([len(s) for s in sources], self.streams)
            if len(shares) == 1:
                outputs = [run(shares[0])]
            else:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.streams, thread_name_prefix="stream")
                futures = [self._pool.submit(run, share) for share in shares]
                outputs = [future.result() for future in futures]
        for share, hyps in zip(shares, outputs, strict=True):
            for i, h in zip(share, hyps, strict=True):
                results[i] = h
        return results

    def _search(
        self,
        sources: Sequence[Sequence[int]],
        *,
        beam_size: int,
        max_length: Sequence[int],
        alpha: float,
        n_best: int,
        search_fn: SearchFn = search,
    ) -> list[list[Hypothesis]]:
        """One share of a batch: search_fn (model.search.search) runs a batch object
        (GreedyBatch, BeamBatch) over it to its end."""
        return search_fn(
            self,
            self.start(sources),
            len(sources),
            beam_size=beam_size,
            bos_id=self.bos_id,
            eos_id=self.eos_id,
            max_length=max_length,
            alpha=alpha,
            n_best=n_best,
        )

    def translations(self, nbest: Sequence[Sequence[Hypothesis]]) -> list[Translation]:
        """Detokenized translations of n-best lists (the first is the best)."""
        out = []
        for hyps in nbest:
            texts_out = self.tokenizer.decode([h.tokens for h in hyps])
            best = hyps[0]
            out.append(
                Translation(
                    text=texts_out[0],
                    tokens=best.tokens,
                    score=best.score,
                    alternatives=[
                        Alternative(t, h.score)
                        for t, h in zip(texts_out[1:], hyps[1:], strict=True)
                    ],
                )
            )
        return out

    def encode_texts(self, texts: Sequence[str]) -> list[list[int]]:
        """Source ids of texts, cut to the positional table."""
        limit = self.max_positions - 1
        return [s[:limit] for s in self.tokenizer.encode(list(texts))]

    def translate(
        self,
        texts: list[str],
        *,
        beam_size: int = 4,
        max_length: int | None = None,
        num_alternatives: int = 0,
        sources: Sequence[Sequence[int]] | None = None,
    ) -> list[Translation]:
        """Translate a batch of texts (each one sentence) and detokenize. sources: the
        texts' ids where the caller has tokenized them already (encode_texts' output)."""
        if sources is None:
            sources = self.encode_texts(texts)
        elif len(sources) != len(texts):
            raise ValueError(f"{len(sources)} sources for {len(texts)} texts")
        nbest = self.generate(
            sources,
            beam_size=beam_size,
            max_length=max_length,
            num_alternatives=num_alternatives,
        )
        return self.translations(nbest)
