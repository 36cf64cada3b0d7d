"""Train a translation model: `python -m model.train --config configs/en-de.json`.

Label-smoothed cross-entropy, Adam with linear warmup and inverse-sqrt decay, gradient
clipping, length-bucketed token batches. Validation loss and BLEU after every epoch, a
snapshot per epoch for averaging, and a resumable `last.pt` written every few minutes: a
killed run started again with the same command continues the same schedule.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import platform
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import sacrebleu
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from model.checkpoint import (
    average_state_dicts,
    load_model,
    load_weights,
    save_model_dir,
    state_dict_for_saving,
)
from model.curves import plot_curves
from model.data import default_data_dir, iterate_batches, read_pairs, token_batches
from model.objective import continued_lr, inverse_sqrt_lr, loss_fn
from model.search import translate_ids
from model.tokenizer import TOKENIZER_FILE, Tokenizer, train_tokenizer
from model.train_config import RunConfig
from model.transformer import Transformer, build_model

log = logging.getLogger("train")


def cpu_has_bf16() -> bool:
    """Whether the CPU runs bfloat16 natively (AVX512-BF16 or AMX), from /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bleu(hypotheses: list[str], references: list[str], lowercase: bool = False) -> float:
    return float(sacrebleu.corpus_bleu(hypotheses, [references], lowercase=lowercase).score)


class Trainer:
    """Owns the run directory: tokenizer, data, model, optimiser, checkpoints and logs."""

    def __init__(
        self,
        run: RunConfig,
        run_dir: Path,
        data_dir: Path,
        init_from: Path | None = None,
        device: str = "cpu",
    ) -> None:
        self.run = run
        self.device = torch.device(device)
        self.cfg = run.train
        self.dir = run_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.init_from = init_from
        if init_from is not None and not (self.dir / TOKENIZER_FILE).exists():
            # The weights only make sense with the tokenizer they were trained with.
            (self.dir / TOKENIZER_FILE).write_bytes((init_from / TOKENIZER_FILE).read_bytes())
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        self.tokenizer = self._tokenizer()
        mc = dataclasses.replace(
            run.model,
            vocab_size=self.tokenizer.vocab_size,
            pad_id=self.tokenizer.pad_id,
            bos_id=self.tokenizer.bos_id,
            eos_id=self.tokenizer.eos_id,
        )
        self.model_config = mc
        self.train_src, self.train_tgt = self._encoded_train()
        val_src_text, self.val_refs = read_pairs(data_dir, "val", run.source_lang, run.target_lang)
        if self.cfg.val_limit:
            val_src_text, self.val_refs = (
                val_src_text[: self.cfg.val_limit],
                self.val_refs[: self.cfg.val_limit],
            )
        # Truncated to the positional table; BLEU still compares against the full references.
        limit = mc.max_length - 1
        self.val_src = [s[:limit] for s in self.tokenizer.encode(val_src_text)]
        self.val_tgt = [t[: limit - 1] for t in self.tokenizer.encode(self.val_refs)]
        self.lengths = [
            (len(s), len(t)) for s, t in zip(self.train_src, self.train_tgt, strict=True)
        ]

        torch.manual_seed(self.cfg.seed)
        random.seed(self.cfg.seed)
        self.model: Transformer = build_model(mc).to(self.device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=self.cfg.lr,
            betas=self.cfg.adam_betas,
            eps=1e-9,
            weight_decay=self.cfg.weight_decay,
        )
        self.state: dict[str, Any] = {
            "step": 0,
            "epoch": 0,
            "batch": 0,
            "elapsed": 0.0,
            "history": [],
            "train_log": [],
        }
        self.stop_requested = False
        self._session_start = time.monotonic()
        # Without native bf16 instructions autocast emulates them: 2.5-3x slower per update
        # on an AVX512 Xeon lacking AVX512-BF16, so the config's bf16 is a request.
        self.bf16 = self.cfg.bf16 and (self.device.type == "cuda" or cpu_has_bf16())
        if self.cfg.bf16 and not self.bf16:
            log.warning("bf16 requested but this CPU has no AVX512-BF16/AMX: training in fp32")

    # ----- setup -----
    def _tokenizer(self) -> Tokenizer:
        path = self.dir / TOKENIZER_FILE
        if path.exists():
            return Tokenizer(path)
        src, tgt = self._train_text()
        log.info(
            "training SentencePiece (%d pieces) on %d train sentences",
            self.cfg.vocab_size,
            len(src) + len(tgt),
        )
        return train_tokenizer(src + tgt, path, self.cfg.vocab_size)

    def _train_text(self) -> tuple[list[str], list[str]]:
        src, tgt = read_pairs(self.data_dir, "train", self.run.source_lang, self.run.target_lang)
        if self.cfg.train_limit:
            src, tgt = src[: self.cfg.train_limit], tgt[: self.cfg.train_limit]
        return src, tgt

    def _encoded_train(self) -> tuple[list[list[int]], list[list[int]]]:
        src, tgt = self._train_text()
        s_ids, t_ids = self.tokenizer.encode(src), self.tokenizer.encode(tgt)
        limit = min(self.cfg.max_source_tokens, self.model_config.max_length - 1)
        keep = [
            i
            for i in range(len(s_ids))
            if 0 < len(s_ids[i]) <= limit and 0 < len(t_ids[i]) <= limit
        ]
        return [s_ids[i] for i in keep], [t_ids[i] for i in keep]

    # ----- checkpoints -----
    def save_last(self) -> None:
        ckpt = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "state": self.state,
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
        }
        tmp = self.dir / "last.pt.tmp"
        torch.save(ckpt, tmp)
        tmp.replace(self.dir / "last.pt")

    def try_resume(self) -> bool:
        path = self.dir / "last.pt"
        if not path.exists():
            return False
        ckpt = torch.load(path, weights_only=False, map_location=self.device)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.state = ckpt["state"]
        torch.set_rng_state(ckpt["torch_rng"].cpu())
        random.setstate(ckpt["python_rng"])
        log.info(
            "resumed at epoch %d batch %d step %d",
            self.state["epoch"],
            self.state["batch"],
            self.state["step"],
        )
        return True

    def start_from_model(self, model_dir: Path) -> None:
        """Begin a fresh run (new optimiser, epoch 0) from a shipped model's weights."""
        loaded = load_model(model_dir)
        if loaded.config.to_dict() != self.model_config.to_dict():
            raise SystemExit(f"{model_dir}: its config.json differs from the run's model config")
        load_weights(self.model, state_dict_for_saving(loaded.model))
        before = json.loads((model_dir / "config.json").read_text()).get("training", {})
        self.state["init"] = {
            "from": str(model_dir),
            "epochs": int(before.get("epochs", 0)),
            "updates": int(before.get("updates", 0)),
            "train_time_s": float(before.get("train_time_s", 0.0)),
        }
        log.info("starting from the weights of %s (%s)", model_dir, self.state["init"])

    def epoch_snapshot(self, epoch: int) -> Path:
        return self.dir / f"epoch_{epoch:03d}.safetensors"

    # ----- evaluation -----
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        self.model.eval()
        total, tokens = 0.0, 0
        batches = token_batches(
            [(len(s), len(t)) for s, t in zip(self.val_src, self.val_tgt, strict=True)],
            self.cfg.max_tokens,
            seed=0,
            epoch=0,
        )
        for batch in iterate_batches(self.val_src, self.val_tgt, batches, **self._ids()):
            batch = batch.to(self.device)
            logits, _ = self.model(batch.src, batch.src_mask, batch.tgt_in)
            total += float(loss_fn(logits, batch.tgt_out, 0.0, self.model_config.pad_id))
            tokens += batch.n_target_tokens
        # The search runs on the CPU (its bookkeeping is numpy): a copy there off an accelerator.
        searcher = self.model if self.device.type == "cpu" else copy.deepcopy(self.model).cpu()
        hyps = translate_ids(
            searcher, self.val_src, beam_size=1, max_length=self.cfg.val_max_length
        )
        texts = self.tokenizer.decode([h[0].tokens for h in hyps])
        self.model.train()
        return {"val_loss": total / tokens, "val_bleu": bleu(texts, self.val_refs)}

    def _ids(self) -> dict[str, int]:
        mc = self.model_config
        return {"pad_id": mc.pad_id, "bos_id": mc.bos_id, "eos_id": mc.eos_id}

    # ----- the loop -----
    def train(self, max_minutes: float = 0.0) -> None:
        cfg = self.cfg
        if not self.try_resume() and self.init_from is not None:
            self.start_from_model(self.init_from)
        self.model.train()
        started = self._session_start = time.monotonic()
        last_save = started
        window_tokens, window_loss, window_start = 0, 0.0, time.monotonic()
        while self.state["epoch"] < cfg.max_epochs and not self._updates_done():
            epoch = self.state["epoch"]
            batches = token_batches(self.lengths, cfg.max_tokens, cfg.seed, epoch)
            bar = tqdm(
                total=len(batches),
                initial=self.state["batch"],
                desc=f"epoch {epoch + 1}",
                unit="batch",
                dynamic_ncols=True,
                mininterval=10,
            )
            for batch in iterate_batches(
                self.train_src, self.train_tgt, batches, **self._ids(), start=self.state["batch"]
            ):
                loss, n_tokens = self._update(batch)
                self.state["batch"] += 1
                window_tokens += n_tokens
                window_loss += loss
                bar.update(1)
                if self.state["step"] % cfg.log_every == 0:
                    now = time.monotonic()
                    entry = {
                        "step": self.state["step"],
                        "epoch": epoch + self.state["batch"] / len(batches),
                        "loss": window_loss / max(window_tokens, 1),
                        "lr": self.optimizer.param_groups[0]["lr"],
                        "tokens_per_s": window_tokens / (now - window_start),
                    }
                    self.state["train_log"].append(entry)
                    log.info(
                        "step %(step)d epoch %(epoch).2f loss %(loss).4f lr %(lr).2e "
                        "tok/s %(tokens_per_s).0f",
                        entry,
                    )
                    bar.set_postfix(loss=f"{entry['loss']:.3f}")
                    window_tokens, window_loss, window_start = 0, 0.0, now
                now = time.monotonic()
                self.state["elapsed"] += now - started
                started = now
                out_of_time = max_minutes and (now - self._session_start) > max_minutes * 60
                if self.stop_requested or out_of_time or self._updates_done():
                    bar.close()
                    self.save_last()
                    log.info(
                        "stopped at step %d (resume with the same command)", self.state["step"]
                    )
                    return
                if now - last_save > cfg.checkpoint_minutes * 60:
                    self.save_last()
                    last_save = now
            bar.close()
            self._end_epoch(epoch)
            started = time.monotonic()
        log.info(
            "training finished: %d epochs, %d updates", self.state["epoch"], self.state["step"]
        )

    def _updates_done(self) -> bool:
        return bool(self.cfg.max_updates) and self.state["step"] >= self.cfg.max_updates

    def _update(self, batch: Any) -> tuple[float, int]:
        cfg = self.cfg
        self.state["step"] += 1
        init = self.state.get("init")
        if init:
            lr = continued_lr(
                self.state["step"], cfg.lr, cfg.warmup_steps, init["updates"], cfg.rewarm_steps
            )
        else:
            lr = inverse_sqrt_lr(self.state["step"], cfg.lr, cfg.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = batch.to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits, aux = self.model(batch.src, batch.src_mask, batch.tgt_in)
        n_tokens = batch.n_target_tokens
        loss = loss_fn(logits.float(), batch.tgt_out, cfg.label_smoothing, self.model_config.pad_id)
        objective = loss / n_tokens + self.model_config.moe_aux_loss_weight * aux
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_norm)
        self.optimizer.step()
        return float(loss.detach()), n_tokens

    def _end_epoch(self, epoch: int) -> None:
        metrics = self.validate()
        entry = {
            "epoch": epoch + 1,
            "step": self.state["step"],
            "elapsed_s": round(self.state["elapsed"], 1),
            **metrics,
        }
        self.state["history"].append(entry)
        log.info(
            "epoch %(epoch)d step %(step)d val_loss %(val_loss).4f val_bleu %(val_bleu).2f", entry
        )
        save_file(self._weights(), str(self.epoch_snapshot(epoch + 1)))
        best = max(self.state["history"], key=lambda h: h["val_bleu"])
        if best is entry:
            save_file(self._weights(), str(self.dir / "best.safetensors"))
        self.state["epoch"] = epoch + 1
        self.state["batch"] = 0
        self.save_last()
        self._drop_old_snapshots()
        (self.dir / "history.json").write_text(json.dumps(self.state["history"], indent=2))
        plot_curves(self.state, self.dir / "curves.png")

    def _weights(self) -> dict[str, torch.Tensor]:
        """The model's weights on the CPU, as shipped."""
        return {k: v.cpu() for k, v in state_dict_for_saving(self.model).items()}

    def _drop_old_snapshots(self) -> None:
        keep = max(self.cfg.average_last, 1)
        snapshots = sorted(self.dir.glob("epoch_*.safetensors"))
        for old in snapshots[:-keep]:
            old.unlink()

    # ----- shipping -----
    def finalize(self, out_dir: Path) -> dict[str, Any]:
        """Average the last N epoch snapshots; ship whichever of it and the best epoch scores
        higher on validation BLEU."""
        snapshots = sorted(self.dir.glob("epoch_*.safetensors"))[-self.cfg.average_last :]
        if not snapshots:
            raise SystemExit(f"no epoch snapshots in {self.dir}: train at least one epoch first")
        candidates: dict[str, dict[str, torch.Tensor]] = {
            f"average of last {len(snapshots)} epochs": average_state_dicts(
                [load_file(str(p)) for p in snapshots]
            ),
            "best epoch": load_file(str(self.dir / "best.safetensors")),
        }
        scored = {}
        for label, weights in candidates.items():
            load_weights(self.model, weights)
            scored[label] = self.validate()
            log.info(
                "%s: val_bleu %.2f val_loss %.4f",
                label,
                scored[label]["val_bleu"],
                scored[label]["val_loss"],
            )
        chosen = max(scored, key=lambda k: scored[k]["val_bleu"])
        history = self.state["history"]
        init = self.state.get("init") or {"epochs": 0, "updates": 0, "train_time_s": 0.0}
        info = {
            "weights": chosen,
            "val": scored[chosen],
            # Totals include the run these weights started from (`--init-from`), if any.
            "epochs": init["epochs"] + self.state["epoch"],
            "updates": init["updates"] + self.state["step"],
            "train_time_s": round(init["train_time_s"] + self.state["elapsed"], 1),
            "started_from": self.state.get("init"),
            "hardware": f"{platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} torch threads",
            "torch": torch.__version__,
            "history": history,
            "train_config": dataclasses.asdict(self.cfg),
        }
        save_model_dir(
            out_dir,
            self.model_config,
            candidates[chosen],
            self.dir / TOKENIZER_FILE,
            source_lang=self.run.source_lang,
            target_lang=self.run.target_lang,
            extra={
                "training": {
                    k: info[k]
                    for k in ("weights", "epochs", "updates", "train_time_s", "hardware", "torch")
                }
            },
        )
        (out_dir / "training.json").write_text(json.dumps(info, indent=2) + "\n")
        if (self.dir / "curves.png").exists():
            (out_dir / "curves.png").write_bytes((self.dir / "curves.png").read_bytes())
        log.info("wrote %s (%s)", out_dir, chosen)
        return info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=None, help="default: $MULTI30K_DIR")
    parser.add_argument("--run-dir", type=Path, default=None, help="default: runs/<name>")
    parser.add_argument(
        "--out", type=Path, default=None, help="model directory; default models/<name>"
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=0.0,
        help="stop (resumably) after this many minutes of this invocation",
    )
    parser.add_argument(
        "--finalize-only",
        action="store_true",
        help="skip training; average snapshots and write the model directory",
    )
    parser.add_argument("--no-finalize", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: the config's)"
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu or cuda: where the updates run (validation's search runs on the CPU)",
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="start from this model directory's weights and tokenizer (fresh optimiser; the "
        "learning-rate schedule continues after its updates)",
    )
    args = parser.parse_args(argv)

    run = RunConfig.load(args.config)
    if args.threads is not None:
        run.train.threads = args.threads
    run_dir = args.run_dir or Path("runs") / run.name
    run_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        handlers=[logging.FileHandler(run_dir / "train.log"), logging.StreamHandler(sys.stderr)],
    )
    trainer = Trainer(
        run,
        run_dir,
        args.data_dir or default_data_dir(),
        init_from=args.init_from,
        device=args.device,
    )

    def request_stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: saving and stopping after this update", signum)
        trainer.stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    log.info("model %s", json.dumps(trainer.model_config.to_dict()))
    log.info("parameters: %d", sum(p.numel() for p in trainer.model.parameters()))
    if not args.finalize_only:
        trainer.train(max_minutes=args.max_minutes)
    else:
        trainer.try_resume()
    if not args.no_finalize and not trainer.stop_requested:
        trainer.finalize(args.out or Path("models") / run.name)


if __name__ == "__main__":
    main()
