"""SentencePiece subword tokenizer, trained on the train split and saved beside the model."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

TOKENIZER_FILE = "tokenizer.model"


class Tokenizer:
    """Text <-> subword ids; one joint vocabulary for source and target."""

    def __init__(self, model_file: Path) -> None:
        self.path = Path(model_file)
        self.sp = spm.SentencePieceProcessor(model_file=str(self.path))
        self.pad_id = self.sp.pad_id()
        self.bos_id = self.sp.bos_id()
        self.eos_id = self.sp.eos_id()
        self.unk_id = self.sp.unk_id()

    @property
    def vocab_size(self) -> int:
        return int(self.sp.get_piece_size())

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Subword ids of each text, without BOS/EOS.

        One text per call: sentencepiece's batch call releases the GIL, and getting it back
        from a busy engine thread costs more than the work (docs/decisions.md).
        """
        return [self.sp.encode(text, out_type=int) for text in texts]

    def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Detokenized text of each id sequence; special ids are dropped."""
        special = {self.pad_id, self.bos_id, self.eos_id}
        return [self.sp.decode([i for i in seq if i not in special]) for seq in ids]


def train_tokenizer(sentences: Iterable[str], out_file: Path, vocab_size: int) -> Tokenizer:
    """Train a BPE SentencePiece model with ids pad=0, unk=1, bos=2, eos=3."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        input_sentence_size=1_000_000,
        shuffle_input_sentence=True,
        seed_sentencepiece_size=1_000_000,
        num_threads=1,
        minloglevel=2,
    )
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_bytes(model.getvalue())
    return Tokenizer(out_file)
