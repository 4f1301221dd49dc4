"""Figures of a run: task accuracies per epoch (Fig. 2b/c), the meta-function (Fig. 1c) and
the distribution of level changes per synapse (the programming-count histogram of Fig. 5b)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from metaplast import rule  # noqa: E402
from metaplast.contract import Contract  # noqa: E402


def accuracy_per_epoch(metrics: dict[str, Any], path: Path) -> None:
    epochs = metrics["epochs"]
    tasks = metrics["config"]["tasks"]
    fig, ax = plt.subplots(figsize=(7, 4))
    x = [e["epoch"] for e in epochs]
    for task in tasks:
        ax.plot(x, [100 * e["test_acc"][task] for e in epochs], label=task)
    switches = [
        e["epoch"] - 0.5 for a, e in zip(epochs, epochs[1:], strict=False) if e["task"] != a["task"]
    ]
    for i, s in enumerate(switches):
        ax.axvline(s, color="grey", ls="--", lw=0.8, label="next task" if i == 0 else None)
    starts = [0.5, *switches]
    ends = [*switches, x[-1] + 0.5] if x else []
    for task, a, b in zip(_task_order(epochs), starts, ends, strict=False):
        ax.text((a + b) / 2, 1.01, task, transform=ax.get_xaxis_transform(), ha="center",
                va="bottom", fontsize=8)  # fmt: skip
    pre = metrics["config"]["pretrain_epochs"]
    if pre:
        ax.axvspan(0.5, pre + 0.5, color="grey", alpha=0.1, label="m* = 0")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(
        f"m* = {metrics['config']['mstar']}, {metrics['config']['arithmetic']} arithmetic",
        pad=14,
    )
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _task_order(epochs: Sequence[dict[str, Any]]) -> list[str]:
    """The tasks in the order they were trained, one entry per stretch of epochs."""
    out: list[str] = []
    for e in epochs:
        if not out or out[-1] != e["task"]:
            out.append(e["task"])
    return out


def meta_function(
    levels: Sequence[float], mstars: Sequence[float], path: Path, contract: Contract | None = None
) -> None:
    """Eq. 2 over the level set for several m*; the LUT staircase beside it when fixed point."""
    lo, hi = rule.hidden_range(levels)
    w = torch.linspace(lo, hi, 4001, dtype=torch.float64)
    panels = 1 if contract is None else 2
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 3.5), sharey=True, squeeze=False)
    for m in mstars:
        (line,) = axes[0, 0].plot(w, rule.meta_function(w, levels, m), label=f"m* = {m:g}")
        if contract is not None:
            lut = torch.tensor(contract.meta_lut(m), dtype=torch.float64) / contract.meta_one
            _, _, j = contract.locate(contract.hidden_to_int(w))
            axes[0, 1].plot(w, lut[j], color=line.get_color(), label=f"m* = {m:g}")
    axes[0, 0].set_title("float rule (Eq. 2)")
    if contract is not None:
        axes[0, 1].set_title(f"fixed-point LUT ({contract.lut_entries} entries)")
    for ax in axes[0]:
        for q in levels:
            ax.axvline(q, color="grey", lw=0.4)
        ax.set_xlabel("hidden weight $W_H$")
        ax.legend(loc="lower right", fontsize=8)
    axes[0, 0].set_ylabel("$\\mathcal{M}(W_H)$")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def count_histogram(
    counts_per_layer: Sequence[torch.Tensor], path: Path, what: str = "synapse"
) -> None:
    """Share of synapses (or devices) against their count (Fig. 5b), with the paper's two
    thresholds, 25 and 50 operations."""
    counts = torch.cat([c.flatten() for c in counts_per_layer]).numpy()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.arange(0, max(int(counts.max()), 1) + 2)
    ax.hist(counts, bins=bins, weights=np.full(counts.shape, 100.0 / counts.size))
    for x in (25, 50):
        ax.axvline(x, color="grey", lw=0.6, ls="--")
    label = "level changes" if what == "synapse" else "programming operations"
    ax.set_xlabel(f"{label} per {what}")
    ax.set_ylabel(f"{what}s (%)")
    ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def conductance_cdf(g: np.ndarray, level: np.ndarray, path: Path) -> None:
    """Cumulative distribution of the conductances programmed to each device level (Fig. 4b),
    read from the crossbar at the end of a run; stuck and worn-out devices included."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k in np.unique(level):
        values = np.sort(g[level == k]) * 1e6
        ax.plot(values, np.linspace(0, 1, len(values)), lw=1, label=f"level {k}")
    ax.set_xlabel("conductance (uS)")
    ax.set_ylabel("cumulative share of devices")
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def transfer_accuracy(accuracy: torch.Tensor, path: Path) -> None:
    """Test accuracy of every simulated transfer."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(100 * accuracy.numpy(), bins=50)
    ax.set_xlabel("test accuracy of one transfer (%)")
    ax.set_ylabel("transfers")
    ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def variability_panel(
    ax: Any, votes: torch.Tensor, x: torch.Tensor, y: torch.Tensor, title: str = ""
) -> Any:
    """One Fig. 6 panel on ``ax``: over the input plane, how far the transfers are from
    agreeing (0: all agree, 1: half say each class), with the test points on top."""
    v = votes.numpy()
    im = ax.imshow(
        4 * v * (1 - v), origin="lower", extent=(0, 1, 0, 1), cmap="Blues", vmin=0, vmax=1
    )
    ax.scatter(x[:, 0], x[:, 1], c=y, cmap="coolwarm", s=8, edgecolors="k", linewidths=0.2)
    ax.set_xlabel("$x_0$")
    ax.set_ylabel("$x_1$")
    if title:
        ax.set_title(title, fontsize=10)
    return im


def transfer_variability(votes: torch.Tensor, x: torch.Tensor, y: torch.Tensor, path: Path) -> None:
    """Fig. 6 of one network."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    im = variability_panel(ax, votes, x, y)
    fig.colorbar(im, ax=ax, label="disagreement between transfers")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
