"""The training loop: schedule, batching, resuming after a kill, averaging and shipping."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.checkpoint import (
    average_state_dicts,
    load_model,
    load_weights,
    state_dict_for_saving,
)
from model.config import ModelConfig
from model.data import token_batches
from model.objective import continued_lr, inverse_sqrt_lr
from model.tokenizer import TOKENIZER_FILE
from model.train import Trainer
from model.train_config import RunConfig, TrainConfig
from tests.tiny_models import tiny_config


def test_warmup_then_inverse_sqrt_decay() -> None:
    peak, warmup = 1e-3, 100
    assert inverse_sqrt_lr(1, peak, warmup) == pytest.approx(1e-5)
    assert inverse_sqrt_lr(50, peak, warmup) == pytest.approx(5e-4)
    assert inverse_sqrt_lr(100, peak, warmup) == pytest.approx(peak)
    assert inverse_sqrt_lr(400, peak, warmup) == pytest.approx(peak / 2)


def test_token_batches_cover_everything_once_under_the_budget() -> None:
    g = torch.Generator().manual_seed(0)
    lengths = [(int(a), int(b)) for a, b in torch.randint(1, 40, (500, 2), generator=g)]
    batches = token_batches(lengths, max_tokens=300, seed=1, epoch=0)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(500))
    for b in batches:
        longest = max(max(lengths[i][0], lengths[i][1] + 1) for i in b)
        assert longest * len(b) <= 300 or len(b) == 1
    assert batches == token_batches(lengths, max_tokens=300, seed=1, epoch=0)
    assert batches != token_batches(lengths, max_tokens=300, seed=1, epoch=1)


def run_config(**train: object) -> RunConfig:
    model = tiny_config(n_heads=2, n_encoder_layers=1, n_decoder_layers=1, dropout=0.1)
    values: dict[str, object] = dict(
        vocab_size=300,
        max_tokens=600,
        lr=3e-3,
        warmup_steps=5,
        train_limit=400,
        val_limit=20,
        threads=1,
        log_every=2,
        val_max_length=8,
        average_last=2,
        checkpoint_minutes=1e9,
    )
    values.update(train)
    return RunConfig(
        name="t", source_lang="en", target_lang="de", model=model, train=TrainConfig(**values)
    )  # type: ignore[arg-type]


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return state_dict_for_saving(trainer.model)


def test_a_killed_run_resumes_on_the_same_schedule(tmp_path: Path, data_dir: Path) -> None:
    straight = Trainer(run_config(max_updates=8), tmp_path / "straight", data_dir)
    straight.train()

    first = Trainer(run_config(max_updates=3), tmp_path / "resumed", data_dir)
    first.train()  # stops after 3 updates, as a kill would, leaving last.pt
    second = Trainer(run_config(max_updates=8), tmp_path / "resumed", data_dir)
    second.train()

    assert second.state["step"] == straight.state["step"] == 8
    for key, value in weights(straight).items():
        torch.testing.assert_close(weights(second)[key], value, rtol=0, atol=0)


def test_epochs_write_snapshots_history_curves_and_a_shippable_model(
    tmp_path: Path, data_dir: Path
) -> None:
    run_dir, out = tmp_path / "run", tmp_path / "models" / "en-de"
    trainer = Trainer(run_config(max_epochs=3), run_dir, data_dir)
    trainer.train()
    assert [h["epoch"] for h in trainer.state["history"]] == [1, 2, 3]
    assert sorted(p.name for p in run_dir.glob("epoch_*.safetensors")) == [
        "epoch_002.safetensors",
        "epoch_003.safetensors",
    ]
    assert (run_dir / "curves.png").stat().st_size > 1000
    polled = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in polled] == [1, 2, 3] and all("val_bleu" in h for h in polled)

    info = trainer.finalize(out)
    loaded = load_model(out)
    assert loaded.source_lang == "en" and loaded.target_lang == "de"
    assert info["epochs"] == 3
    # The two candidates, made and scored here: the one with the higher validation BLEU
    # ships (the average on a tie).
    candidates = {
        "average": average_state_dicts(
            [load_file(str(p)) for p in sorted(run_dir.glob("epoch_*.safetensors"))]
        ),
        "best": load_file(str(run_dir / "best.safetensors")),
    }
    assert any(
        not torch.equal(value, candidates["best"][key])
        for key, value in candidates["average"].items()
    ), "the candidates must differ for the shipped weights to tell which one shipped"
    scores = {}
    for name, candidate in candidates.items():
        load_weights(trainer.model, candidate)
        scores[name] = trainer.validate()["val_bleu"]
    winner = "best" if scores["best"] > scores["average"] else "average"
    assert info["weights"].startswith(winner), (info["weights"], scores)
    assert info["val"]["val_bleu"] == pytest.approx(scores[winner])
    shipped = state_dict_for_saving(loaded.model)
    for key, value in candidates[winner].items():
        torch.testing.assert_close(shipped[key], value)


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({**dataclasses.asdict(ModelConfig()), "d_modle": 3})


def test_continued_schedule_picks_up_where_the_first_run_stopped() -> None:
    peak, warmup, offset = 1e-3, 800, 5000
    assert continued_lr(100, peak, warmup, offset, rewarm=200) == pytest.approx(
        0.5 * inverse_sqrt_lr(offset + 100, peak, warmup)
    )
    for step in (200, 201, 3000):
        assert continued_lr(step, peak, warmup, offset, 200) == inverse_sqrt_lr(
            offset + step, peak, warmup
        )


def test_a_run_can_start_from_a_shipped_model(tmp_path: Path, data_dir: Path) -> None:
    first = Trainer(run_config(max_epochs=1), tmp_path / "first", data_dir)
    first.train()
    shipped = tmp_path / "models" / "en-de"
    before = first.finalize(shipped)

    run_dir = tmp_path / "more"
    more = Trainer(run_config(max_epochs=2), run_dir, data_dir, init_from=shipped)
    assert (run_dir / TOKENIZER_FILE).read_bytes() == (shipped / TOKENIZER_FILE).read_bytes()
    more.start_from_model(shipped)
    for key, value in state_dict_for_saving(load_model(shipped).model).items():
        torch.testing.assert_close(weights(more)[key], value, rtol=0, atol=0)
    assert more.state["init"]["updates"] == before["updates"] > 0

    more.train()  # a fresh run: starts from the shipped weights again, new optimiser
    assert more.optimizer.param_groups[0]["lr"] == pytest.approx(
        continued_lr(more.state["step"], 3e-3, 5, before["updates"], more.cfg.rewarm_steps)
    )
    info = more.finalize(tmp_path / "models" / "again")
    assert info["epochs"] == before["epochs"] + 2
    assert info["updates"] == before["updates"] + more.state["step"]
    assert info["started_from"]["from"] == str(shipped)
