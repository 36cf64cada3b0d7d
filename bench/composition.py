"""`python -m bench.composition`: sentences joining a running batch decode as they do offline.

A correctness check on a real model, not a timing: test_2016_flickr sentences are admitted
into one running batch in waves of 1-8 at random steps (rows at different positions,
sources of different lengths, beams widened before they join), and each sentence's tokens
are compared with offline decoding (`Engine.generate` of all of them in one batch), on
both backends, greedy and beam 4.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from pathlib import Path

from bench.toolkit import split_sentences
from model.search import BeamBatch, SearchBatch
from service.engine.base import Engine
from service.engine.loader import load_engine


def joined(engine: Engine, sources: list[list[int]], width: int, seed: int) -> dict[int, list[int]]:
    """Each sentence's best tokens when it joins a running batch at a random step."""
    rng = random.Random(seed)
    order = list(range(len(sources)))
    rng.shuffle(order)
    waves, at = [], 0
    while order:
        size = rng.randint(1, 8)
        waves.append((at, order[:size]))
        order, at = order[size:], at + rng.randint(0, 3)
    got: dict[int, list[int]] = {}
    running: SearchBatch | None = None
    step = 0
    while waves or (running is not None and running.sentences):
        while waves and waves[0][0] <= step:
            _, wave = waves.pop(0)
            fresh = engine.new_batch(
                engine.sentences([sources[i] for i in wave], owners=wave), width
            )
            for owner, hyps in fresh.widen() if isinstance(fresh, BeamBatch) else []:
                got[owner] = hyps[0].tokens
            if running is None:
                running = fresh
            else:
                running.concatenate(fresh)
        if running is not None:
            for owner, hyps in running.step():
                got[owner] = hyps[0].tokens
        step += 1
    return got


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/en-de"))
    parser.add_argument("--limit", type=int, default=96)
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args(argv)
    source = split_sentences("en", args.limit)
    for backend in ("onnx", "torch"):
        engine = load_engine(args.model, backend=backend, threads=1)
        sources = engine.encode_texts(source)
        for width in args.beams:
            offline = engine.generate(sources, beam_size=width)
            got = joined(engine, sources, width, seed=width)
            same = sum(got[i] == offline[i][0].tokens for i in range(len(sources)))
            print(f"{backend} fp32 beam {width}: {same}/{len(sources)} identical to offline")


if __name__ == "__main__":
    main()
