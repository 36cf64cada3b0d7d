"""The training curves figure (curves.png) of a run's logged state."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_curves(state: dict[str, Any], out: Path) -> None:
    """Training loss per logged window; validation loss and BLEU per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_bleu) = plt.subplots(1, 2, figsize=(11, 4))
    train = state["train_log"]
    if train:
        ax_loss.plot(
            [t["epoch"] for t in train], [t["loss"] for t in train], label="train (smoothed CE)"
        )
    hist = state["history"]
    if hist:
        ax_loss.plot(
            [h["epoch"] for h in hist], [h["val_loss"] for h in hist], "o-", label="val CE"
        )
        ax_bleu.plot([h["epoch"] for h in hist], [h["val_bleu"] for h in hist], "o-", color="C2")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss per token")
    ax_loss.legend()
    ax_bleu.set_xlabel("epoch")
    ax_bleu.set_ylabel("val BLEU (greedy, sacreBLEU)")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
