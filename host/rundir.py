"""A run directory: resolved config, per-epoch metrics, level-change counts and a checkpoint.

Every file is written to a temporary name and renamed into place, so a run killed at any
moment leaves either the previous epoch's files or the new ones, never a torn file.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from metaplast import fused_update
from metaplast.errors import ConfigError
from metaplast.host.config import SessionConfig

if TYPE_CHECKING:
    from metaplast.host.session import Session

CONFIG = "config.json"
METRICS = "metrics.json"
CHECKPOINT = "checkpoint.pt"
CHANGES = "level_changes.npz"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it. The
    file gets the mode an ordinary new file would (``mkstemp`` makes it private), so that a
    shared run directory stays readable by the lab as its plots are."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(data, indent=2) + "\n").encode()))


class RunDir:
    """The folder of one session; :meth:`open` checks it belongs to the config at hand."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def open(
        cls, path: str | Path, config: SessionConfig, resume: bool, fresh_on_resume: bool = True
    ) -> RunDir:
        path = Path(path)
        has_run = (path / CONFIG).exists() or (path / CHECKPOINT).exists()
        if resume and has_run and not (path / CHECKPOINT).exists():
            if not fresh_on_resume:
                raise ConfigError(
                    f"--resume: {path} has no {CHECKPOINT} (the run never finished an epoch), "
                    f"so there is nothing to resume; remove {path} to start it again"
                )
            print(f"{path}: no {CHECKPOINT} to resume, starting from the first epoch",
                  file=sys.stderr)  # fmt: skip
        if has_run and not resume:
            raise ConfigError(
                f"{path} already holds a run; pass --resume to continue it or choose another --out"
            )
        if resume and has_run:
            stored = cls.stored_config(path)
            diff = config.differences(stored)
            if diff:
                raise ConfigError(
                    f"--resume: {path} was made with another configuration ({'; '.join(diff)})"
                )
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        write_json(path / CONFIG, config.to_dict())
        return run

    @staticmethod
    def stored_config(path: Path) -> SessionConfig:
        try:
            data = json.loads((path / CONFIG).read_text())
            return SessionConfig.from_dict(data)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"{path / CONFIG} is not a readable run config: {exc}") from exc

    def checkpoint(self) -> dict[str, Any] | None:
        p = self.path / CHECKPOINT
        if not p.exists():
            return None
        try:
            return torch.load(p, weights_only=False)
        except Exception as exc:  # a checkpoint can fail in many ways; all mean the same
            raise ConfigError(f"{p} cannot be read ({exc}); remove it to restart the run") from exc

    def save_epoch(self, session: Session) -> None:
        state = session.state_dict()
        atomic_write(self.path / CHECKPOINT, lambda f: torch.save(state, f))
        counts = {f"layer{i}": c.numpy() for i, c in enumerate(session.change_counts)}
        for i, c in enumerate(session.programming.counts):
            counts[f"programming{i}"] = c.numpy()
        atomic_write(self.path / CHANGES, lambda f: np.savez_compressed(f, **counts))
        write_json(self.path / METRICS, metrics_document(session))

    def save_conductances(self, session: Session) -> None:
        """The arrays' final state (``conductances.npz``: per layer the conductances, device
        levels and operation counts, with an in-process model also its stuck and worn-out
        maps, all ``rows x cols``) and the conductance distribution per device level
        (``conductances.png``, Fig. 4b)."""
        from metaplast.host import plots

        layers = session.arrays
        if not layers:
            return
        arrays = {
            f"layer{i}_{name}": t.numpy()
            for i, s in enumerate(layers)
            for name, t in s.array_state().items()
        }
        atomic_write(self.path / "conductances.npz", lambda f: np.savez_compressed(f, **arrays))
        plots.conductance_cdf(
            np.concatenate([arrays[f"layer{i}_g"].ravel() for i in range(len(layers))]),
            np.concatenate([arrays[f"layer{i}_level"].ravel() for i in range(len(layers))]),
            self.path / "conductances.png",
        )


def metrics_document(session: Session) -> dict[str, Any]:
    cfg = session.config
    counts = torch.cat([c.flatten() for c in session.change_counts]).to(torch.float64)
    return {
        "config": cfg.to_dict(),
        "contract": cfg.contract.describe() if cfg.arithmetic == "fixed" else None,
        "torch_threads": torch.get_num_threads(),
        "update_kernel": fused_update.describe(),
        "time": {phase: round(t, 3) for phase, t in session.timing.items()},
        "synapses": int(counts.numel()),
        "devices": 2 * int(counts.numel()),
        "epochs": session.metrics,
        "level_changes": {
            "total": int(counts.sum()),
            "mean_per_synapse": float(counts.mean()),
            "max_per_synapse": int(counts.max()),
            "share_under_25": float((counts < 25).double().mean()),
            "share_over_50": float((counts > 50).double().mean()),
        },
        "programming": session.programming.summary(),
        "crossbar": _crossbar_document(session),
        "hardware_aware": _hardware_aware_document(session),
        "link": _link_document(session),
    }


def _crossbar_document(session: Session) -> dict[str, Any]:
    """The device model and what happened to its devices (``ideal``: no devices to tell of)."""
    cfg = session.config
    if cfg.device.crossbar == "ideal":
        return {"model": "ideal"}
    if session.board_array is not None:
        return {
            "model": "board",
            "device": session.board_array.model,
            "tile": [session.board_array.tile_rows, session.board_array.tile_cols],
            "tiles_used": sum(s.tiles for s in session.synapses),  # type: ignore[attr-defined]
        }
    assert cfg.device_model is not None
    bars = [s.crossbar for s in session.crossbars]
    return {
        **cfg.device_model.describe(),
        "tiles_used": sum(b.tiles for b in bars),
        "stuck_hrs_devices": sum(int((b.stuck == 1).sum()) for b in bars),
        "stuck_lrs_devices": sum(int((b.stuck == 2).sum()) for b in bars),
        "worn_out_devices": session.worn_out_devices(),
    }


def _hardware_aware_document(session: Session) -> dict[str, Any] | None:
    """The device model the training expected transfers onto (``None``: regular training)."""
    cfg = session.config
    if cfg.device.hardware_aware is None:
        return None
    assert cfg.device_model is not None
    return cfg.device_model.describe()


def _link_document(session: Session) -> dict[str, Any] | None:
    """Where the layers lived and what the link cost (``None`` for an in-process session)."""
    link = session.link
    if link is None:
        return None
    from metaplast.host.synapses import LinkSynapses

    return {
        "port": link.name,
        "layers_on_link": [
            i for i, s in enumerate(session.synapses) if isinstance(s, LinkSynapses)
        ],
        **session.link_stats().to_dict(),
    }
