"""One input at a time, as a chip classifies it.

A network trained with batch statistics (``--bn-stats batch``) needs a batch to normalize its
pre-activations; a chip that classifies one input has none. After training, the statistics of
each task can be re-estimated once from a few unlabeled inputs of that task (the weights stay
as they are), and then every input is classified alone. The batch norm and the activation that
follows it are then a fixed function of one pre-activation, so they fold into comparators in
the periphery: a sign neuron becomes one threshold and a polarity, a ``K``-level activation
``K - 1`` thresholds (what a small flash ADC on the column would compare against), and the
output layer a scale and an offset per class.

:func:`evaluate_run` measures, per task, the accuracy with batch statistics (as the session
tested), with re-estimated statistics, and with the folded comparators, for several numbers of
calibration inputs; :func:`periphery_arrays` is what a chip's periphery would be loaded with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from metaplast.errors import ConfigError
from metaplast.host.qnn import Activation, QuantizedMLP
from metaplast.host.session import Session, TaskData, finished_session, load_task, load_tasks


@dataclass(frozen=True)
class Affine:
    """A layer's batch norm with fixed statistics: ``gain * a + offset`` per neuron."""

    gain: Tensor
    offset: Tensor


def calibrate(model: QuantizedMLP, x: Tensor) -> list[Affine]:
    """Each layer's batch norm, with the statistics of its pre-activations over the inputs
    ``x``, as a per-neuron affine map; a layer's inputs come through the layers before it
    with their own re-estimated statistics, as they will at test time."""
    affines = []
    h = x
    last = len(model.weights) - 1
    with torch.no_grad():
        for i, (w, bn) in enumerate(zip(model.weights, model.norms, strict=True)):
            a = h @ w.t()
            mean, var = a.mean(0), a.var(0, unbiased=False)
            gain = bn.weight / torch.sqrt(var + bn.eps)
            affine = Affine(gain, bn.bias - gain * mean)
            affines.append(affine)
            h = affine.gain * a + affine.offset
            if i != last:
                h = model.act(h)
    return affines


def classify(model: QuantizedMLP, affines: Sequence[Affine], x: Tensor) -> Tensor:
    """Classes of inputs ``x``, each normalized with the fixed statistics alone."""
    h = x
    last = len(model.weights) - 1
    with torch.no_grad():
        for i, (w, affine) in enumerate(zip(model.weights, affines, strict=True)):
            h = affine.gain * (h @ w.t()) + affine.offset
            if i != last:
                h = model.act(h)
    return h.argmax(1)


@dataclass(frozen=True)
class Comparators:
    """A hidden layer's neurons folded into comparators on the raw column currents: the
    output level is how many thresholds ``polarity * (a - threshold) >= 0`` holds for."""

    thresholds: Tensor  # neurons x (levels - 1)
    polarity: Tensor  # neurons, +1 or -1
    values: Tensor  # the activation's output levels


def fold(affine: Affine, act: Activation) -> Comparators:
    """``act(gain * a + offset)`` as comparators on ``a`` (a few-level activation only)."""
    if not act.levels:
        raise ValueError(f"a full-precision activation ({act.name}) has no comparators")
    theta = act.thresholds
    gain = affine.gain[:, None]
    thresholds = (theta[None, :] - affine.offset[:, None]) / gain
    # a neuron with gain 0 outputs the same level whatever its input
    constant = gain == 0
    level = (affine.offset[:, None] >= theta[None, :]).expand_as(thresholds)
    thresholds = torch.where(constant, torch.where(level, -torch.inf, torch.inf), thresholds)
    polarity = torch.where(affine.gain < 0, -1.0, 1.0)
    return Comparators(thresholds, polarity, act.values)


def classify_folded(
    model: QuantizedMLP, affines: Sequence[Affine], x: Tensor
) -> tuple[Tensor, list[Comparators]]:
    """Classes of inputs ``x`` through comparators (hidden layers) and the output layer's
    scale and offset per class; the comparators too."""
    layers = [fold(a, model.act) for a in affines[:-1]]
    h = x
    with torch.no_grad():
        for w, comp in zip(model.weights[:-1], layers, strict=True):
            a = h @ w.t()
            diff = comp.polarity[None, :, None] * (a[:, :, None] - comp.thresholds[None])
            h = comp.values[(diff >= 0).sum(2)]
        out = affines[-1].gain * (h @ model.weights[-1].t()) + affines[-1].offset
    return out.argmax(1), layers


def periphery_arrays(
    task: str, affines: Sequence[Affine], comparators: Sequence[Comparators]
) -> dict[str, Any]:
    """A task's calibrated network as arrays for a chip's periphery, per hidden layer: each
    neuron's comparator thresholds on its column current (in weight units) and polarity
    (few-level activations), or its gain and offset before the activation (full-precision
    ones); and the output layer's gain and offset per class."""
    out: dict[str, Any] = {}
    for i, affine in enumerate(affines[:-1]):
        if comparators:
            out[f"{task}/layer{i}/thresholds"] = comparators[i].thresholds.numpy()
            out[f"{task}/layer{i}/polarity"] = comparators[i].polarity.numpy()
        else:
            out[f"{task}/layer{i}/gain"] = affine.gain.detach().numpy()
            out[f"{task}/layer{i}/offset"] = affine.offset.detach().numpy()
    out[f"{task}/output/gain"] = affines[-1].gain.detach().numpy()
    out[f"{task}/output/offset"] = affines[-1].offset.detach().numpy()
    return out


def _task_model(session: Session, task: str) -> None:
    """The model as it tests ``task``: the batch norms' affine parameters of that task."""
    snapshot = session.bn_snapshots.get(task)
    if session.config.bn == "per-task" and snapshot is not None:
        session.model.norms.load_state_dict(snapshot)


def evaluate_run(
    run: str | Path,
    calibrate_counts: Sequence[int],
    *,
    data_dir: str | Path | None = None,
    test_batch_size: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Per task of the finished session in ``run``: accuracy with batch statistics, with
    statistics re-estimated from ``N`` training inputs of the task (no labels) for each ``N``
    of ``calibrate_counts``, and through the folded comparators. Errors before any work."""
    if not calibrate_counts or any(n < 2 for n in calibrate_counts):
        raise ConfigError(f"--calibrate: counts must be >= 2 inputs, got {list(calibrate_counts)}")
    if test_batch_size is not None and test_batch_size < 2:
        raise ConfigError(f"--batch-size must be >= 2 for batch statistics, got {test_batch_size}")
    session = finished_session(run, "evaluate")
    cfg = session.config
    last = cfg.tasks[-1]
    tests = load_tasks(cfg, data_dir, train=False)
    available = 60000 if cfg.train_limit is None else cfg.train_limit
    if max(calibrate_counts) > available:
        raise ConfigError(
            f"--calibrate {max(calibrate_counts)}: more than the {available} training inputs "
            "of a task"
        )
    batch = test_batch_size or cfg.test_batch_size
    act = session.model.act
    record: dict[str, Any] = {
        "run": str(run),
        "bn_stats": cfg.bn_stats,
        "activation": act.name,
        "test_batch_size": batch,
        "calibration_seed": seed,
        "tasks": {},
    }
    record["arrays"] = {}
    for task, data in tests.items():
        train = _calibration_inputs(task, cfg, data_dir, max(calibrate_counts), seed)
        batch_acc = session.evaluate(data, last, batch)
        saved = {k: v.clone() for k, v in session.model.norms.state_dict().items()}
        _task_model(session, task)
        row: dict[str, Any] = {"batch_statistics": batch_acc, "calibrated": {}, "folded": {}}
        for n in calibrate_counts:
            affines = calibrate(session.model, train[:n])
            predicted = classify(session.model, affines, data.x_test)
            row["calibrated"][str(n)] = _accuracy(predicted, data)
            layers: list[Comparators] = []
            if act.levels:
                folded, layers = classify_folded(session.model, affines, data.x_test)
                row["folded"][str(n)] = _accuracy(folded, data)
            if n == max(calibrate_counts):
                record["arrays"].update(periphery_arrays(task, affines, layers))
        session.model.norms.load_state_dict(saved)
        record["tasks"][task] = row
    return record


def _calibration_inputs(
    task: str, cfg: Any, data_dir: str | Path | None, count: int, seed: int
) -> Tensor:
    """``count`` training inputs of ``task`` in a seeded order (their labels unused)."""
    data: TaskData = load_task(
        task,
        data_dir,
        cfg.train_limit,
        inputs=cfg.inputs,
        permutation_seed=cfg.permutation_seed,
    )
    order = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(seed))
    return data.x_train[order[:count]]


def _accuracy(predicted: Tensor, data: TaskData) -> float:
    return float((predicted == data.y_test).double().mean())
