"""The training session: tasks in sequence, metaplastic updates, metrics, checkpoints, resume.

Every epoch ends with a checkpoint, so a run killed at any point resumes from its last finished
epoch and ends with the same metrics as an uninterrupted run: the batch order of each epoch and
the dither seed of each update block derive from the seed and the position in the run, not from
state that a crash would lose.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from metaplast.errors import ConfigError
from metaplast.firmware_sim.crossbar.periphery import Periphery
from metaplast.firmware_sim.unit.digital_unit import LevelChanges
from metaplast.host import datasets
from metaplast.host.adam import Adam
from metaplast.host.board_crossbar import BoardCrossbarSynapses
from metaplast.host.config import SessionConfig
from metaplast.host.crossbar_synapses import CrossbarSynapses
from metaplast.host.hardware_aware import LevelTransfers
from metaplast.host.link import LinkStats
from metaplast.host.programming import ProgrammingCounter
from metaplast.host.progress import progress as progress_of
from metaplast.host.qnn import QuantizedMLP
from metaplast.host.rundir import RunDir
from metaplast.host.synapses import FixedSynapses, FloatSynapses, LinkSynapses, SynapseArray
from metaplast.protocol import Capability, XbarInfo

if TYPE_CHECKING:
    from metaplast.host.link import Link


HEARTBEAT_S = 30.0
"""Seconds an epoch may run silently in a log before it prints a line of its progress."""

PHASES: tuple[str, ...] = (
    "forward",
    "backward",
    "adam",
    "update",
    "events",
    "evaluation",
)
"""Where a session's time goes (``metrics.json``'s ``time``): the forward pass and the loss,
the backward pass (with the batch norms' optimizer), Adam's moments, the update of the hidden
weights (the fused kernel, a board, or the torch operations), the level changes' bookkeeping
(counters, programming, ``W_S``), and testing after each epoch. (Writing the run directory is
not in it: its own record would have to be written before it is known.)"""


@dataclass(frozen=True)
class TaskData:
    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def _as_inputs(images: Any, inputs: str, permutation: Any = None) -> Tensor:
    """Pixels to read voltages, one row per image: in [-1, 1] (``signed``) or [0, 1]."""
    x = torch.from_numpy(images).flatten(1).to(torch.float32)
    if permutation is not None:
        x = x[:, torch.from_numpy(permutation)]
    return x / 127.5 - 1.0 if inputs == "signed" else x / 255.0


def load_task(
    task: str,
    data_dir: str | Path | None,
    train_limit: int | None,
    *,
    train: bool = True,
    inputs: str = "signed",
    permutation_seed: int = 0,
) -> TaskData:
    """A task's images as tensors; ``train=False`` reads the test split alone (empty
    training tensors), for work that only tests. A permuted task (``pmnist-K``) is MNIST
    with the ``K``-th permutation of ``permutation_seed``."""
    permuted = datasets.PermutedTask.parse(task)
    source = "mnist" if permuted else task
    permutation = permuted.permutation(permutation_seed) if permuted else None
    xte, yte = datasets.load(source, "test", data_dir)
    if train:
        xtr, ytr = datasets.load(source, "train", data_dir)
    else:
        xtr, ytr = xte[:0], yte[:0]
    if train_limit is not None:
        xtr, ytr = xtr[:train_limit], ytr[:train_limit]
    return TaskData(
        task,
        _as_inputs(xtr, inputs, permutation),
        torch.from_numpy(ytr).to(torch.int64),
        _as_inputs(xte, inputs, permutation),
        torch.from_numpy(yte).to(torch.int64),
    )


def load_tasks(
    config: SessionConfig, data_dir: str | Path | None, *, train: bool = True
) -> dict[str, TaskData]:
    """Every task of a session, as its configuration prepares the inputs."""
    return {
        t: load_task(
            t,
            data_dir,
            config.train_limit,
            train=train,
            inputs=config.inputs,
            permutation_seed=config.permutation_seed,
        )
        for t in config.tasks
    }


def _generator(*parts: int) -> torch.Generator:
    g = torch.Generator()
    seed = 0
    for p in parts:
        seed = (seed * 1_000_003 + p) % (2**63)
    g.manual_seed(seed)
    return g


class Session:
    """One training session of a :class:`SessionConfig` on in-process synapse arrays."""

    def __init__(
        self,
        config: SessionConfig,
        link: Link | None = None,
        link_layers: Sequence[int] | None = None,
    ) -> None:
        """``link``: a digital unit behind a serial port that holds the hidden weights of
        ``link_layers`` (default: all), packed one after the other from board address 0; the
        other layers stay in the in-process model.

        A board of protocol version 2 hashes each synapse's index in its layer for the
        stochastic rounding (UPDATE_LAYER), so any placement ends bit for bit as the
        in-process session. With ``--crossbar board`` every layer is on the board, its
        devices too (``host/board_crossbar.py``).
        """
        self.config = config
        self.link = link
        self.link_before = LinkStats()  # what earlier invocations of a resumed run sent
        self.board_array: XbarInfo | None = None  # the array behind the board (--crossbar board)
        self.model = QuantizedMLP(config.sizes, config.activation, config.bn_stats)
        init = _generator(config.seed, 1)
        self.synapses: list[SynapseArray] = []
        shapes = [tuple(w.shape) for w in self.model.weights]
        on_link = set(range(len(shapes)) if link_layers is None else link_layers)
        on_board_array = config.device.crossbar == "board"
        if on_board_array and (link is None or on_link != set(range(len(shapes)))):
            raise ConfigError(
                "`crossbar` board trains on the array behind a board: give --port, with every "
                "layer on the board (no --link-layers)"
            )
        if link is not None:
            if config.arithmetic != "fixed":
                raise ConfigError("a board computes the fixed-point rule: use --arithmetic fixed")
            if not on_link <= set(range(len(shapes))):
                raise ConfigError(f"--link-layers: the network has layers 0..{len(shapes) - 1}")
            needed = sum(math.prod(shapes[i]) for i in on_link)
            link.attach(config.contract, synapses=needed)
            if on_board_array:
                link.require(Capability.CROSSBAR, "--crossbar board")
                self.board_array = link.xbar_info()
            link.reset()
        base = 0
        for i, shape in enumerate(shapes):
            w_hidden = torch.randn(shape, generator=init) * config.init_std + config.init_mean
            seed = config.seed * 64 + i
            if link is not None and i in on_link:
                self.synapses.append(LinkSynapses(w_hidden, config.contract, seed, link, base))
                base += math.prod(shape)
            elif config.arithmetic == "fixed":
                self.synapses.append(FixedSynapses(w_hidden, config.contract, seed))
            else:
                self.synapses.append(FloatSynapses(w_hidden, config.contract.levels))
            if on_board_array:
                inner = self.synapses[i]
                assert isinstance(inner, LinkSynapses) and link is not None
                on_array = BoardCrossbarSynapses(
                    inner, link, i, self.board_array, seed, lambda: self.model.training
                )
                self.synapses[i] = on_array
                self.model.multiply_with(i, on_array.mvm)
            elif config.device.crossbar != "ideal":
                assert config.device_model is not None
                xbar = CrossbarSynapses(
                    self.synapses[i],
                    config.contract,
                    config.device_model,
                    seed,
                    Periphery(config.device.periphery),
                )
                self.synapses[i] = xbar
                self.model.multiply_with(i, xbar.mvm)
        self.hardware_aware: LevelTransfers | None = None
        if config.device.hardware_aware is not None:
            assert config.device_model is not None
            self.hardware_aware = LevelTransfers(
                [s.levels for s in self.synapses],
                shapes,  # type: ignore[arg-type]
                config.contract,
                config.device_model,
                lambda: self.model.training,
                _generator(config.seed, 3),
            )
            for i in range(len(shapes)):
                self.model.multiply_with(i, self.hardware_aware.mvm(i))
        self.programming = ProgrammingCounter(config.contract, [s.levels() for s in self.synapses])
        self.sync_weights()
        self.adams = [Adam(s.shape) for s in self.synapses]
        self.bn_opt = torch.optim.Adam(self.model.norms.parameters(), lr=config.lr)
        self.bn_snapshots: dict[str, dict[str, Tensor]] = {}
        self.change_counts = [torch.zeros(s.shape, dtype=torch.int32) for s in self.synapses]
        self.epochs_done = 0
        self.metrics: list[dict[str, Any]] = []
        self.timing = dict.fromkeys(PHASES, 0.0)

    # state -----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "epochs_done": self.epochs_done,
            "synapses": [s.state_dict() for s in self.synapses],
            "adams": [a.state_dict() for a in self.adams],
            "norms": self.model.norms.state_dict(),
            "bn_opt": self.bn_opt.state_dict(),
            "bn_snapshots": self.bn_snapshots,
            "change_counts": [c.clone() for c in self.change_counts],
            "programming": self.programming.state_dict(),
            "metrics": self.metrics,
            "timing": dict(self.timing),
            **({} if self.link is None else {"link_stats": self.link_stats().to_dict()}),
            **(
                {}
                if self.hardware_aware is None
                else {"hardware_aware_rng": self.hardware_aware.gen.get_state()}
            ),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for s, st in zip(self.synapses, state["synapses"], strict=True):
            s.load_state_dict(st)
        for a, st in zip(self.adams, state["adams"], strict=True):
            a.load_state_dict(st)
        self.model.norms.load_state_dict(state["norms"])
        self.bn_opt.load_state_dict(state["bn_opt"])
        self.bn_snapshots = state["bn_snapshots"]
        self.change_counts = [c.clone() for c in state["change_counts"]]
        if "programming" in state:  # checkpoints made before the counter start from levels
            self.programming.load_state_dict(state["programming"])
        if self.hardware_aware is not None:
            self.hardware_aware.gen.set_state(state["hardware_aware_rng"])
        self.epochs_done = int(state["epochs_done"])
        self.metrics = list(state["metrics"])
        self.timing = {**dict.fromkeys(PHASES, 0.0), **state.get("timing", {})}
        if "link_stats" in state:
            self.link_before = LinkStats(**state["link_stats"])
        self.sync_weights()

    def link_stats(self) -> LinkStats:
        """What the link cost over the whole run, every invocation up to now."""
        assert self.link is not None
        return self.link_before.plus(self.link.stats)

    # training --------------------------------------------------------------------------------

    def set_mstar(self, mstar: float) -> None:
        for s in self.synapses:
            s.set_mstar(mstar)

    def start_task(self) -> None:
        """A new task gets a fresh Adam: its moments describe the previous task's loss."""
        self.adams = [Adam(s.shape) for s in self.synapses]
        self.bn_opt = torch.optim.Adam(self.model.norms.parameters(), lr=self.config.lr)

    def train_epoch(self, data: TaskData, epoch: int, progress: bool = True) -> dict[str, Any]:
        cfg = self.config
        self.model.train()
        order = torch.randperm(len(data.y_train), generator=_generator(cfg.seed, 2, epoch))
        batches = order.split(cfg.batch_size)
        loss_sum = correct = seen = changes = 0
        ops_before = self.programming.total()
        loss_fn = torch.nn.CrossEntropyLoss()
        # one line per epoch is the caller's (on_epoch); in a file, a line within an epoch
        # only when it has run a while (a slow or noisy serial link)
        bar = progress_of(
            batches,
            desc=f"epoch {epoch} {data.name}",
            unit="batch",
            enabled=progress,
            heartbeat=HEARTBEAT_S,
        )
        clock, spent = time.perf_counter, self.timing
        for idx in bar:
            t0 = clock()
            x, y = data.x_train[idx], data.y_train[idx]
            out = self.model(x)
            loss = loss_fn(out, y)
            t1 = clock()
            self.model.zero_weight_grads()
            self.bn_opt.zero_grad()
            loss.backward()
            self.bn_opt.step()
            spent["forward"] += t1 - t0
            spent["backward"] += clock() - t1
            for i, (w, s, adam) in enumerate(
                zip(self.model.weights, self.synapses, self.adams, strict=True)
            ):
                assert w.grad is not None
                t0 = clock()
                step = adam.step(w.grad, cfg.lr)
                t1 = clock()
                events = s.apply(step)
                t2 = clock()
                changes += self.record_changes(i, events)
                spent["adam"] += t1 - t0
                spent["update"] += t2 - t1
                spent["events"] += clock() - t2
            loss_sum += float(loss.detach()) * len(y)
            correct += int((out.argmax(1) == y).sum())
            seen += len(y)
        return {
            "train_loss": loss_sum / seen,
            "train_acc": correct / seen,
            "level_changes": changes,
            "programming_ops": self.programming.total() - ops_before,
            **(
                {}
                if cfg.device.crossbar in ("ideal", "board")  # the board's wear is its own
                else {"worn_out_devices": self.worn_out_devices()}
            ),
        }

    def record_changes(self, layer: int, changes: LevelChanges) -> int:
        """Count a layer's level changes and bring its ``W_S`` in the model up to date (only
        the synapses that changed: the rest kept their level)."""
        s = self.synapses[layer]
        self.change_counts[layer].view(-1)[changes.address] += 1
        self.programming.record(layer, s.levels(), changes)
        if not isinstance(s, CrossbarSynapses | BoardCrossbarSynapses):
            self.model.set_levels(layer, changes.address, s.level_values[changes.new_level])
        return len(changes)

    @property
    def crossbars(self) -> list[CrossbarSynapses]:
        """The layers on a crossbar model (none on the ideal crossbar)."""
        return [s for s in self.synapses if isinstance(s, CrossbarSynapses)]

    @property
    def arrays(self) -> list[CrossbarSynapses | BoardCrossbarSynapses]:
        """The layers on an array: a crossbar model's, or the board's."""
        return [s for s in self.synapses if isinstance(s, CrossbarSynapses | BoardCrossbarSynapses)]

    def worn_out_devices(self) -> int:
        """Devices of the crossbar models that have used up their endurance."""
        return sum(int(s.crossbar.failed.sum()) for s in self.crossbars)

    def sync_weights(self) -> None:
        """The quantized weights into the model; a layer on a crossbar reads its devices in
        its own MVMs, so reading them here would be wasted."""
        self.model.set_weights(
            [
                None if isinstance(s, CrossbarSynapses | BoardCrossbarSynapses) else s.quantized()
                for s in self.synapses
            ]
        )

    def evaluate(self, data: TaskData, current_task: str, batch_size: int | None = None) -> float:
        """Test accuracy; a task trained earlier is tested with its own batch-norm state."""
        predicted = self.predict(data, current_task, batch_size)
        return float((predicted == data.y_test).double().mean())

    @torch.no_grad()
    def predict(self, data: TaskData, current_task: str, batch_size: int | None = None) -> Tensor:
        """The class of every test image, with the batch-norm state of ``data``'s task, in
        test batches of ``batch_size`` (default: the session's)."""
        self.model.eval()
        saved = None
        snapshot = self.bn_snapshots.get(data.name)
        if self.config.bn == "per-task" and snapshot is not None and data.name != current_task:
            saved = {k: v.clone() for k, v in self.model.norms.state_dict().items()}
            self.model.norms.load_state_dict(snapshot)
        batches = data.x_test.split(batch_size or self.config.test_batch_size)
        out = torch.cat([self.model(xb).argmax(1) for xb in batches])
        if saved is not None:
            self.model.norms.load_state_dict(saved)
        return out

    def run(
        self,
        data: dict[str, TaskData],
        rundir: RunDir | None = None,
        progress: bool = True,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Train the remaining epochs; checkpoint after each."""
        cfg = self.config
        schedule = cfg.schedule()
        for epoch, task in schedule:
            if epoch <= self.epochs_done:
                continue
            if epoch == 1 or task != schedule[epoch - 2][1]:
                self.start_task()
            mstar = cfg.mstar_at(epoch)
            self.set_mstar(mstar)
            t0 = time.perf_counter()
            stats = self.train_epoch(data[task], epoch, progress)
            seconds = time.perf_counter() - t0
            if epoch == len(schedule) or schedule[epoch][1] != task:
                self.bn_snapshots[task] = {
                    k: v.clone() for k, v in self.model.norms.state_dict().items()
                }
            t0 = time.perf_counter()
            test_acc = {t: self.evaluate(data[t], task) for t in cfg.tasks}
            self.timing["evaluation"] += time.perf_counter() - t0
            record = {
                "epoch": epoch,
                "task": task,
                "mstar": mstar,
                "test_acc": test_acc,
                **stats,
                "seconds": round(seconds, 3),
            }
            self.metrics.append(record)
            self.epochs_done = epoch
            if rundir is not None:
                rundir.save_epoch(self)
            if on_epoch is not None:
                on_epoch(record)
        return self.metrics


def finished_session(path: str | Path, option: str) -> Session:
    """The session of the finished run in ``path``, restored from its last checkpoint, for
    work on the trained network (transfers, evaluation); a :class:`ConfigError` naming
    ``option`` when ``path`` holds no finished, readable run."""
    path = Path(path)
    if not (path / "config.json").exists():
        raise ConfigError(f"{option} {path}: not a run directory (no config.json)")
    config = RunDir.stored_config(path)
    state = RunDir(path).checkpoint()
    if state is None:
        raise ConfigError(f"{option} {path}: no readable checkpoint ({path / 'checkpoint.pt'})")
    if state["epochs_done"] < len(config.schedule()):
        raise ConfigError(
            f"{option} {path}: the session stopped after epoch {state['epochs_done']} of "
            f"{len(config.schedule())}; finish it (metaplast train --resume) first"
        )
    session = Session(config)
    try:
        session.load_state_dict(state)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"{option} {path}: its checkpoint does not load ({exc})") from exc
    return session


def train(
    config: SessionConfig,
    out: str | Path,
    data_dir: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    link: Link | None = None,
    link_layers: Sequence[int] | None = None,
    fresh_on_resume: bool = True,
) -> dict[str, Any]:
    """A whole session into run directory ``out``: data, training, metrics and plots.

    ``resume`` continues from the run's checkpoint; a run that has none (it never finished an
    epoch) starts from the first epoch, with a line on stderr, or is refused unless
    ``fresh_on_resume`` (a sweep point killed in its first epoch simply starts again).

    Data are loaded before ``out`` is touched, so a missing data set or a config error leaves
    no half-made run directory behind. With ``link``, the layers ``link_layers`` train on
    the board behind it (see :class:`Session`); a board that fails mid-session raises
    :class:`~metaplast.host.link.LinkError` and leaves the last epoch's checkpoint as it was.
    """
    from metaplast.host import plots
    from metaplast.host.rundir import metrics_document, write_json

    data = load_tasks(config, data_dir)
    run = RunDir.open(out, config, resume, fresh_on_resume)
    state = run.checkpoint() if resume else None
    session = Session(config, link, link_layers)
    if state is not None:
        session.load_state_dict(state)
    session.run(data, run, progress=progress, on_epoch=on_epoch)
    metrics = metrics_document(session)
    write_json(run.path / "metrics.json", metrics)
    plots.accuracy_per_epoch(metrics, run.path / "accuracy.png")
    plots.meta_function(
        config.contract.levels,
        sorted({0.0, 1.0, 2.0, config.mstar}),
        run.path / "meta.png",
        config.contract if config.arithmetic == "fixed" else None,
    )
    plots.count_histogram(session.change_counts, run.path / "level_changes.png")
    plots.count_histogram(session.programming.counts, run.path / "programming.png", "device")
    run.save_conductances(session)
    return metrics
