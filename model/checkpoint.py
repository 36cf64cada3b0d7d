"""A shipped model is a directory: config.json, model.safetensors, tokenizer.model, metrics.json."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from model.config import ModelConfig
from model.tokenizer import TOKENIZER_FILE, Tokenizer
from model.transformer import Transformer, build_model

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
# Tied to the embedding; safetensors refuses shared storage, so it is stored once.
TIED_KEY = "generator.proj.weight"


@dataclass
class LoadedModel:
    """A model directory in memory."""

    path: Path
    config: ModelConfig
    model: Transformer
    tokenizer: Tokenizer
    source_lang: str
    target_lang: str

    @property
    def version(self) -> str:
        return model_hash(self.path)

    @property
    def pair(self) -> str:
        return f"{self.source_lang}-{self.target_lang}"


def state_dict_for_saving(model: Transformer) -> dict[str, torch.Tensor]:
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        state.pop(TIED_KEY, None)
    return state


def load_weights(model: Transformer, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    allowed_missing = {TIED_KEY} if model.config.tie_embeddings else set()
    if set(missing) - allowed_missing or unexpected:
        raise ValueError(
            f"weights do not match the config: missing {missing}, unexpected {unexpected}"
        )
    if model.config.tie_embeddings:
        model.generator.proj.weight = model.embedding.weight


def save_model_dir(
    out_dir: Path,
    config: ModelConfig,
    state: dict[str, torch.Tensor],
    tokenizer_file: Path,
    *,
    source_lang: str,
    target_lang: str,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write config.json (with the language pair), model.safetensors and the tokenizer."""
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"source_lang": source_lang, "target_lang": target_lang, **(extra or {})}
    (out_dir / CONFIG_FILE).write_text(
        json.dumps({"model": config.to_dict(), **meta}, indent=2) + "\n"
    )
    save_file(state, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    if tokenizer_file.resolve() != (out_dir / TOKENIZER_FILE).resolve():
        shutil.copyfile(tokenizer_file, out_dir / TOKENIZER_FILE)


def read_model_config(model_dir: Path) -> tuple[ModelConfig, dict[str, Any]]:
    raw = json.loads((Path(model_dir) / CONFIG_FILE).read_text())
    config = ModelConfig.from_dict(raw.pop("model"))
    return config, raw


def load_model(model_dir: Path | str, device: str = "cpu") -> LoadedModel:
    """Load a model directory for inference (eval mode)."""
    path = Path(model_dir)
    config, meta = read_model_config(path)
    model = build_model(config)
    load_weights(model, load_file(str(path / WEIGHTS_FILE)))
    model.to(device).eval()
    return LoadedModel(
        path=path,
        config=config,
        model=model,
        tokenizer=Tokenizer(path / TOKENIZER_FILE),
        source_lang=meta["source_lang"],
        target_lang=meta["target_lang"],
    )


def model_hash(model_dir: Path) -> str:
    """A short content hash of the config, weights and tokenizer: the model version."""
    h = hashlib.sha256()
    for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE):
        h.update((Path(model_dir) / name).read_bytes())
    return h.hexdigest()[:12]


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of several checkpoints' weights (checkpoint averaging)."""
    if not states:
        raise ValueError("nothing to average")
    out = {}
    for key in states[0]:
        out[key] = (
            torch.stack([s[key].float() for s in states]).mean(dim=0).to(states[0][key].dtype)
        )
    return out


def read_metrics(model_dir: Path) -> dict[str, Any]:
    path = Path(model_dir) / METRICS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def write_metrics(model_dir: Path, metrics: dict[str, Any]) -> None:
    (Path(model_dir) / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
