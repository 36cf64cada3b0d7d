"""Multi30k: reading the parallel corpus and batching it by length and token count."""

from __future__ import annotations

import gzip
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

SPLITS = ("train", "val", "test_2016_flickr", "test_2017_flickr", "test_2017_mscoco")
TEST_SPLITS = SPLITS[1:]


def default_data_dir() -> Path:
    """MULTI30K_DIR, else ../shared/data/multi30k beside the repository."""
    env = os.environ.get("MULTI30K_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"


def splits_for(
    data_dir: Path, *langs: str, splits: tuple[str, ...] = TEST_SPLITS
) -> tuple[str, ...]:
    """The splits that have a file for every one of langs (Czech has no 2017 test sets)."""
    return tuple(s for s in splits if all((Path(data_dir) / f"{s}.{x}.gz").exists() for x in langs))


def read_lines(data_dir: Path, split: str, lang: str) -> list[str]:
    path = Path(data_dir) / f"{split}.{lang}.gz"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: set --data-dir or MULTI30K_DIR")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def read_pairs(data_dir: Path, split: str, src: str, tgt: str) -> tuple[list[str], list[str]]:
    sources, targets = read_lines(data_dir, split, src), read_lines(data_dir, split, tgt)
    if len(sources) != len(targets):
        raise ValueError(f"{split}: {len(sources)} {src} lines but {len(targets)} {tgt} lines")
    return sources, targets


@dataclass
class Batch:
    """Padded tensors of one training batch."""

    src: Tensor  # (B, S) source ids
    src_mask: Tensor  # (B, S) True on real tokens
    tgt_in: Tensor  # (B, T) BOS + target
    tgt_out: Tensor  # (B, T) target + EOS, padded with pad_id

    def to(self, device: torch.device) -> Batch:
        if device.type == "cpu":
            return self
        return Batch(
            *(
                t.to(device, non_blocking=True)
                for t in (self.src, self.src_mask, self.tgt_in, self.tgt_out)
            )
        )

    @property
    def n_target_tokens(self) -> int:
        return int((self.tgt_out != 0).sum())


def pad(seqs: list[list[int]], pad_id: int) -> Tensor:
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def make_batch(
    src: list[list[int]], tgt: list[list[int]], *, pad_id: int, bos_id: int, eos_id: int
) -> Batch:
    src_ids = pad(src, pad_id)
    return Batch(
        src=src_ids,
        src_mask=src_ids != pad_id,
        tgt_in=pad([[bos_id, *t] for t in tgt], pad_id),
        tgt_out=pad([[*t, eos_id] for t in tgt], pad_id),
    )


def token_batches(
    lengths: list[tuple[int, int]], max_tokens: int, seed: int, epoch: int
) -> list[list[int]]:
    """Indices grouped into batches of similar length, each under max_tokens (padded, src or tgt).

    The order depends only on (seed, epoch), so a resumed run sees the same batches.
    """
    rng = random.Random(seed * 100_003 + epoch)
    # Random tie-breaking inside each length keeps buckets different from epoch to epoch.
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i][0], lengths[i][1], rng.random()))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        longest_if_added = max(longest, lengths[i][0], lengths[i][1] + 1)
        if current and longest_if_added * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, longest_if_added = [], max(lengths[i][0], lengths[i][1] + 1)
        current.append(i)
        longest = longest_if_added
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def iterate_batches(
    src: list[list[int]],
    tgt: list[list[int]],
    batches: list[list[int]],
    *,
    pad_id: int,
    bos_id: int,
    eos_id: int,
    start: int = 0,
) -> Iterator[Batch]:
    for idx in batches[start:]:
        yield make_batch(
            [src[i] for i in idx],
            [tgt[i] for i in idx],
            pad_id=pad_id,
            bos_id=bos_id,
            eos_id=eos_id,
        )
