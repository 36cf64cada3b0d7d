"""Tiny random models for the tests: one config, and a model directory in the shipped layout."""

from __future__ import annotations

from pathlib import Path

import torch

from model.checkpoint import save_model_dir, state_dict_for_saving
from model.config import ModelConfig
from model.tokenizer import Tokenizer
from model.transformer import build_model


def tiny_config(tokenizer: Tokenizer | None = None, **overrides: object) -> ModelConfig:
    """2+2 layers, d_model 32: the model every test that needs one builds; with a tokenizer,
    its vocabulary and special ids."""
    values: dict[str, object] = dict(
        d_model=32,
        n_heads=4,
        n_encoder_layers=2,
        n_decoder_layers=2,
        d_ff=64,
        dropout=0.0,
        max_length=64,
    )
    if tokenizer is not None:
        values.update(
            vocab_size=tokenizer.vocab_size,
            pad_id=tokenizer.pad_id,
            bos_id=tokenizer.bos_id,
            eos_id=tokenizer.eos_id,
        )
    values.update(overrides)
    return ModelConfig(**values)  # type: ignore[arg-type]


def write_tiny_model(
    out_dir: Path, tokenizer: Tokenizer, source: str, target: str, seed: int, **overrides: object
) -> Path:
    """A randomly initialised model directory, in the shipped layout."""
    torch.manual_seed(seed)
    config = tiny_config(tokenizer, **overrides)
    model = build_model(config)
    save_model_dir(
        out_dir,
        config,
        state_dict_for_saving(model),
        tokenizer.path,
        source_lang=source,
        target_lang=target,
    )
    return out_dir
