"""The metaplastic update in one pass per layer, where it can be compiled; torch otherwise.

A training step's update is Adam's step, its quantization to the update format, Algorithm 1
(level and LUT look-ups, the conditional attenuation, rounding, saturation), the new level and
the level-change events and counters. As torch tensor operations
(:meth:`~metaplast.contract.Contract.apply`, :func:`~metaplast.rule.update`) that is about 35
passes over every synapse per batch; the numba kernels of :mod:`metaplast.kernels` do it in one.

The torch operations stay the reference and the fallback: both kernels are bit-identical to
them (tested; the fixed point also against the scalar spec of the contract). Where numba is
missing or cannot compile, or
``METAPLAST_KERNELS=torch`` asks for it, the torch operations run instead, with the same
results: the process says so once on stderr, and :func:`describe` (``metrics.json``'s
``update_kernel``) records it. Tensors off the CPU (a GPU) always take the torch operations.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metaplast import rule
from metaplast.contract import Contract, mix32

__all__ = [
    "AdamStep",
    "Backend",
    "FloatLevels",
    "Scratch",
    "Step",
    "backend",
    "describe",
    "fixed_update",
    "float_update",
    "step_tensor",
    "torch_operations",
    "warm_up",
]

ENV = "METAPLAST_KERNELS"


@dataclass(frozen=True)
class AdamStep:
    """Adam's step ``lr * (m / c1) / denom``, ``denom = sqrt(v / c2) + eps``, not computed yet.

    Handing the parts over lets a kernel finish the step in the same pass as the update. The
    denominator comes computed by torch: torch's float32 ``sqrt`` is not correctly rounded on
    every CPU (1 ulp off for about one value in seven with AVX-512), so a kernel's own would
    not be bit-identical. ``m`` and ``denom`` belong to the optimizer: use the step before it
    moves them again.
    """

    m: Tensor
    denom: Tensor
    c1: float  # 1 - beta1**t
    lr: float

    def tensor(self) -> Tensor:
        """The step as torch computes it (the reference for the kernels' float32 order)."""
        return self.lr * ((self.m / self.c1) / self.denom)

    def scalars(self) -> tuple[np.float32, np.float32]:
        return np.float32(self.c1), np.float32(self.lr)


Step = Tensor | AdamStep
"""A step ``eta * U_W`` for a layer's synapses: float values, or Adam's not yet computed."""


def step_tensor(step: Step) -> Tensor:
    return step.tensor() if isinstance(step, AdamStep) else step


@dataclass(frozen=True)
class Backend:
    """Which implementation runs the update: ``numba`` (one pass) or ``torch`` (the tensor
    operations), and why."""

    name: str
    detail: str


_state: dict[str, Any] = {}


def _kernels() -> ModuleType | None:
    if "kernels" not in _state:
        if os.environ.get(ENV, "numba") == "torch":
            _fall_back(f"{ENV}=torch")
        else:
            try:
                from metaplast import kernels

                _state["kernels"] = kernels
                _state["backend"] = Backend("numba", _numba_version())
            except Exception as exc:  # an import can fail in many ways; all mean the same
                _fall_back(f"numba cannot be imported ({type(exc).__name__}: {exc})")
    return _state["kernels"]


def _numba_version() -> str:
    import numba

    return f"numba {numba.__version__}"


def _fall_back(reason: str) -> None:
    _state["kernels"] = None
    _state["backend"] = Backend("torch", reason)
    print(
        f"metaplast: the fused update is not available: {reason}; the update runs as torch "
        "tensor operations instead (the same results, about twice as slow per epoch)",
        file=sys.stderr,
    )


def backend() -> Backend:
    """The implementation this process uses (decided at the first update)."""
    _kernels()
    return _state["backend"]


def describe() -> dict[str, str]:
    """``metrics.json``'s ``update_kernel``: the backend and its version or reason."""
    b = backend()
    return {"backend": b.name, "detail": b.detail}


@contextmanager
def torch_operations() -> Iterator[None]:
    """Updates inside this block take the torch operations (for comparisons and tests)."""
    saved = dict(_state)
    _state.update(kernels=None, backend=Backend("torch", "fused_update.torch_operations()"))
    try:
        yield
    finally:
        _state.clear()
        _state.update(saved)


def _run(kernels: ModuleType, name: str, n: int, *args: Any) -> bool:
    """Call kernel ``name`` of :mod:`metaplast.kernels` on ``n`` synapses with torch's
    threads, each taking the next chunk when it is done. With one thread, or a layer of two
    chunks or fewer, the serial variant runs instead: waking threads would cost more than
    it saves. A kernel that does not compile turns this process to the torch operations."""
    import numba

    threads = torch.get_num_threads()
    serial = threads == 1 or n <= 2 * kernels.CHUNK
    kernel = getattr(kernels, f"{name}_serial" if serial else name)
    try:
        if serial:
            kernel(*args)
        else:
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            chunksize = numba.set_parallel_chunksize(1)
            try:
                kernel(*args)
            finally:
                numba.set_parallel_chunksize(chunksize)
                if torch.get_num_threads() != threads:
                    # numba's OpenMP layer sizes the runtime it shares with torch when it
                    # starts; torch's thread count decides its results, so it is restored
                    torch.set_num_threads(threads)
    except numba.core.errors.NumbaError as exc:
        _fall_back(f"numba cannot compile {name} ({type(exc).__name__}: {exc})")
        return False
    return True


def _on_cpu(*tensors: Tensor) -> bool:
    return all(t.device.type == "cpu" and t.is_contiguous() for t in tensors)


_NO_ADAM = (np.float32(1),) * 2
_NO_FLOATS = np.empty(0, np.float32)
_NO_INTS = np.empty(0, np.int64)


def _step_arrays(step: Step, kernels: ModuleType) -> tuple[int, np.ndarray, np.ndarray, tuple]:
    """``(kind, a, b, adam)`` of a float or Adam step for the kernels."""
    if isinstance(step, AdamStep):
        m, denom = step.m.reshape(-1).numpy(), step.denom.reshape(-1).numpy()
        return kernels.STEP_ADAM, m, denom, step.scalars()
    return kernels.STEP_FLOAT, step.detach().reshape(-1).numpy(), _NO_FLOATS, _NO_ADAM


def _steps_usable(step: Step) -> bool:
    if isinstance(step, AdamStep):
        return _on_cpu(step.m, step.denom) and step.m.dtype == step.denom.dtype == torch.float32
    return _on_cpu(step) and step.dtype == torch.float32


class Scratch:
    """A layer's scratch space for the kernels (events, the float rule's ``tanh`` argument),
    kept by whoever owns the synapses, so that no update allocates (and page-faults) it
    anew."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._arrays: dict[str, np.ndarray] = {}

    def _get(self, name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = np.zeros(shape, dtype)
        return self._arrays[name]

    def events(self, kernels: ModuleType) -> tuple[np.ndarray, ...]:
        """``address, old, new, chunk_events`` as the kernels fill them."""
        chunks = -(-self.n // kernels.CHUNK)
        return (
            *(self._get(k, (self.n,), np.int64) for k in ("address", "old", "new")),
            self._get("chunk_events", (chunks,), np.int64),
        )

    def vector(self, name: str) -> np.ndarray:
        """A float32 value per synapse."""
        return self._get(name, (self.n,), np.float32)

    def gather(self, kernels: ModuleType, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """The events of the last update of ``n`` synapses, in address order."""
        address, old, new, chunk_events = self.events(kernels)
        chunks = chunk_events[: -(-n // kernels.CHUNK)]
        out = [np.empty(int(chunks.sum()), np.int64) for _ in range(3)]
        kernels.gather_events(address, old, new, chunks, *out)
        return tuple(torch.from_numpy(x) for x in out)  # type: ignore[return-value]


def _scratch(scratch: Scratch | None, n: int) -> Scratch:
    return scratch if scratch is not None and scratch.n >= n else Scratch(n)


_OPEN = 1 << 62  # a cell bound beyond every hidden weight


@dataclass(frozen=True)
class _FixedTables:
    cells: np.ndarray  # per level: value, lower and upper bound of its cell
    bounds: np.ndarray
    recips: np.ndarray


_fixed_tables: dict[Contract, _FixedTables] = {}


def _tables_of(c: Contract) -> _FixedTables:
    if c not in _fixed_tables:
        b = list(c.boundary_ints)
        cells = np.array([c.level_ints, [-_OPEN, *b], [*b, _OPEN]], np.int64).T.copy()
        _fixed_tables[c] = _FixedTables(cells, np.array(b, np.int64), np.array(c.recips, np.int64))
    return _fixed_tables[c]


def fixed_update(
    contract: Contract,
    hidden: Tensor,
    levels: Tensor,
    counts: Tensor,
    step: Step | Tensor,
    lut: tuple[int, ...],
    *,
    start: int,
    seed: int,
    scratch: Scratch | None = None,
) -> tuple[Tensor, Tensor, Tensor] | None:
    """Update a span of a digital unit's memory in place: ``hidden``, ``levels`` and
    ``counts`` are the span's int64 views, ``start`` the address the dither hashes for its
    first synapse (the memory address, or the index in the synapse's layer). ``step``: the
    update format's integers (int64), or a host step that is quantized as
    :meth:`Contract.update_to_int` would. Returns the events ``(address - start, old, new)``,
    or ``None`` where the kernel cannot run (the caller takes the torch operations)."""
    kernels = _kernels()
    if kernels is None or not _on_cpu(hidden, levels, counts):
        return None
    if isinstance(step, Tensor) and not step.is_floating_point():
        if not _on_cpu(step) or step.dtype != torch.int64:
            return None
        kind, a, b, adam = kernels.STEP_INT, _NO_FLOATS, _NO_FLOATS, _NO_ADAM
        d_int = step.reshape(-1).numpy()
    elif _steps_usable(step):
        kind, a, b, adam = _step_arrays(step, kernels)
        d_int = _NO_INTS
    else:
        return None
    c = contract
    t = _tables_of(c)
    fmt = (
        float(2**c.update_frac_bits),
        float(2 ** (c.update_width - 1)),
        c.w_min,
        c.w_max,
        c.round_shift,
        c.recip_shift,
    )
    dither = (
        c.rounding == "stochastic",
        start,
        int(mix32(int(seed))),
        (1 << c.round_shift) - 1,
        1 << (c.round_shift - 1),
    )
    n = hidden.numel()
    buf = _scratch(scratch, n)
    memory = tuple(x.reshape(-1).numpy() for x in (hidden, levels, counts))
    tables = (t.cells, t.bounds, t.recips, np.array([*lut, c.meta_one], np.int64))
    source = (kind, d_int, a, b, *adam)
    events = buf.events(kernels)
    if not _run(kernels, "fixed_update", n, source, fmt, dither, memory, tables, events):
        return None
    return buf.gather(kernels, n)


def warm_up(contract: Contract) -> None:
    """Compile (or load from numba's cache) the fixed-point kernel for update-format steps
    now rather than at the first update: a board must answer its first UPDATE within the
    host's timeout, and a first compile takes seconds."""
    zero = torch.zeros(1, dtype=torch.int64)
    memory = (zero.clone(), contract.level_of(zero), zero.clone())
    fixed_update(contract, *memory, zero, contract.meta_lut(0.0), start=0, seed=0)


@dataclass(frozen=True)
class FloatLevels:
    """A level set as the float rule's torch operations see it (float32), for the kernels."""

    cells: np.ndarray  # per level: value, lower and upper bound of its cell
    bounds: np.ndarray
    recip_widths: np.ndarray  # 1 / (q[i+1] - q[i]), as torch's reciprocal gives it
    low: np.float32
    high: np.float32

    @classmethod
    def of(cls, level_values: Tensor) -> FloatLevels:
        q = level_values.to(torch.float32)
        b = rule.level_boundaries(q)
        inf = torch.tensor([float("inf")])
        cells = torch.stack([q, torch.cat([-inf, b]), torch.cat([b, inf])], 1)
        low, high = rule.hidden_range(q)
        return cls(
            cells.contiguous().numpy(),
            b.numpy(),
            (q[1:] - q[:-1]).reciprocal().numpy(),
            np.float32(low),
            np.float32(high),
        )


def float_update(
    hidden: Tensor,
    levels: Tensor,
    step: Step,
    q: FloatLevels,
    mstar: float,
    scratch: Scratch | None = None,
) -> tuple[Tensor, Tensor, Tensor] | None:
    """The float rule on float32 ``hidden`` (and their int64 ``levels``) in place; events as
    :func:`fixed_update`, ``None`` where the kernel cannot run. Eq. 2's ``tanh`` is torch's,
    one vectorized pass between the two halves of the kernel, so the result is the rule's
    bit for bit."""
    kernels = _kernels()
    if kernels is None or not _on_cpu(hidden, levels) or not _steps_usable(step):
        return None
    kind, a, b, adam = _step_arrays(step, kernels)
    n = hidden.numel()
    buf = _scratch(scratch, n)
    w, lvl = hidden.reshape(-1).numpy(), levels.reshape(-1).numpy()
    rule_args = (np.float32(2 * mstar), np.float32(mstar), q.low, q.high)
    x, tanh_x = buf.vector("x")[:n], buf.vector("tanh")[:n]
    if not _run(kernels, "float_meta", n, w, lvl, q.cells, q.recip_widths, rule_args, x):
        return None
    torch.tanh(torch.from_numpy(x), out=torch.from_numpy(tanh_x))
    source = (kind, _NO_INTS, a, b, *adam)
    tables = (q.cells, q.bounds)
    events = buf.events(kernels)
    if not _run(kernels, "float_update", n, source, (w, lvl), tables, tanh_x, rule_args, events):
        return None
    return buf.gather(kernels, n)
