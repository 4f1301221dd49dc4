"""Numba kernels of the metaplastic update: a layer's whole update in one pass.

What the torch operations of :meth:`metaplast.contract.Contract.apply` and
:func:`metaplast.rule.update` do in about 35 passes over a layer's synapses, plus what
surrounds them in a training step (Adam's step, its quantization to the update format, the new
level, the level-change events and counters), done here block by block while the block is in
the cache. Only :mod:`metaplast.fused_update` calls these; it owns the fallback to torch.

The synapses are cut into chunks of :data:`CHUNK` that run in parallel, and each chunk into
blocks of :data:`BLOCK`. A block goes through the rule in short loops, each of which LLVM
vectorizes (arithmetic on slices; no gather in them), with the few table look-ups (a level's
value, boundaries and reciprocals, the LUT) as loops of their own. A chunk writes its events
into its own stretch of the event buffers, so they come out in address order and nothing
depends on the thread count.

Step sources (``kind``): :data:`STEP_INT` the update format's integers, :data:`STEP_FLOAT` a
float32 step ``eta * U``, :data:`STEP_ADAM` Adam's first moment ``m`` and denominator
``sqrt(v / c2) + eps``, the step being ``lr * (m / c1) / denom``, each operation in float32 and
in the order torch evaluates it, so that the kernels are bit-identical to the torch path
(:class:`~metaplast.fused_update.AdamStep`).
"""

from __future__ import annotations

import numpy as np
from numba import config, njit, prange

from metaplast.contract import MIX32_ROUNDS

# numba's OpenMP layer binds to the OpenMP runtime torch has loaded: one team of threads for
# both, instead of numba's threads fighting torch's (which spin for a while after each
# operation). fused_update keeps the team at torch's size.
config.THREADING_LAYER_PRIORITY = ["omp", "workqueue", "tbb"]
config.THREADING_LAYER = "default"

STEP_INT, STEP_FLOAT, STEP_ADAM = 0, 1, 2
CHUNK = 16384  # synapses per parallel task
BLOCK = 256  # synapses per block: the block's temporaries stay in L1
_MASK32 = 0xFFFFFFFF

_JIT = {"cache": True, "nogil": True, "boundscheck": False, "error_model": "numpy"}


@njit(inline="always", **_JIT)
def _mix32(x: int) -> int:
    x &= _MASK32
    for add_shift, xor_shift in MIX32_ROUNDS:
        x = (x + (x << add_shift)) & _MASK32
        x ^= x >> xor_shift
    return x


@njit(inline="always", **_JIT)
def _steps(kind, a, b, c1, lr, out):  # type: ignore[no-untyped-def]
    """``out[:len(a)]``: float32 steps from a float step ``a`` or Adam's ``m = a``,
    ``denom = b``."""
    if kind == STEP_FLOAT:
        for t in range(a.shape[0]):
            out[t] = a[t]
    else:
        for t in range(a.shape[0]):
            out[t] = lr * ((a[t] / c1) / b[t])


@njit(inline="always", **_JIT)
def _search(x, bounds):  # type: ignore[no-untyped-def]
    """Level index: how many boundaries ``x`` is at or above (ties to the upper level)."""
    k = 0
    for bnd in bounds:
        k += x >= bnd
    return k


@njit(inline="always", **_JIT)
def _events(lo, b0, moved, hidden, levels, bounds, counts, ev_addr, ev_old, ev_new, count):  # type: ignore[no-untyped-def]
    """The level changes of a block (``moved`` marks them): new levels, counters, events."""
    for t in range(moved.shape[0]):
        if moved[t]:
            old = levels[t]
            new = _search(hidden[t], bounds)
            levels[t] = new
            if counts.shape[0] > 0:
                counts[t] += 1
            ev_addr[lo + count] = b0 + t
            ev_old[lo + count] = old
            ev_new[lo + count] = new
            count += 1
    return count


@njit(inline="always", **_JIT)
def _chunks(a):  # type: ignore[no-untyped-def]
    return (a.shape[0] + CHUNK - 1) // CHUNK


@njit(inline="always", **_JIT)
def _temporaries(dtype, count):  # type: ignore[no-untyped-def]
    """``count`` arrays of a block's length."""
    return [np.empty(BLOCK, dtype) for _ in range(count)]


@njit(inline="always", **_JIT)
def _cells(lvl, cells, value, lower, upper):  # type: ignore[no-untyped-def]
    """Per synapse of a block, from its level: the level's value and its cell's bounds."""
    for t in range(lvl.shape[0]):
        q = lvl[t]
        value[t] = cells[q, 0]
        lower[t] = cells[q, 1]
        upper[t] = cells[q, 2]


@njit(inline="always", **_JIT)
def _intervals(lvl, per_interval, up, down):  # type: ignore[no-untyped-def]
    """Per synapse of a block, from its level: a per-interval quantity of the interval above
    the level and of the one below it (clamped at the ends)."""
    last = per_interval.shape[0] - 1
    for t in range(lvl.shape[0]):
        q = lvl[t]
        up[t] = per_interval[min(q, last)]
        down[t] = per_interval[max(q - 1, 0)]


@njit(**_JIT)
def _fixed_chunk(k, source, fmt, dither, memory, tables, events):  # type: ignore[no-untyped-def]
    """:func:`fixed_update` on chunk ``k``."""
    kind, d_int, a, b, c1, lr = source
    scale, limit, w_min, w_max, shift, recip_shift = fmt
    stochastic, start, seed_hash, mask, nearest = dither
    hidden, levels, counts = memory
    cells, bounds, recips, lut_ext = tables
    ev_addr, ev_old, ev_new, chunk_events = events
    last_j = lut_ext.shape[0] - 2
    no_att = lut_ext.shape[0] - 1
    lo = k * CHUNK
    hi = min(hidden.shape[0], lo + CHUNK)
    # the chunk's own temporaries: fresh allocations, which LLVM knows do not alias
    d, r, ws, blo, bhi, rup, rdn, j, moved = _temporaries(np.int64, 9)
    step = np.empty(BLOCK, np.float32)
    count = 0
    for b0 in range(lo, hi, BLOCK):
        b1 = min(hi, b0 + BLOCK)
        size = b1 - b0
        w = hidden[b0:b1]
        lvl = levels[b0:b1]
        if kind == STEP_INT:
            d[:size] = d_int[b0:b1]
        else:
            _steps(kind, a[b0:b1], b[b0:b1], c1, lr, step)
            for t in range(size):
                x = np.rint(np.float64(step[t]) * scale)
                d[t] = np.int64(min(max(x, -limit), limit - 1.0))
        if stochastic:
            for t in range(size):
                r[t] = (_mix32(start + b0 + t) ^ seed_hash) & mask
        else:
            r[:size] = nearest
        _cells(lvl, cells, ws, blo, bhi)
        _intervals(lvl, recips, rup, rdn)
        for t in range(size):  # the LUT index, or ``no_att`` where M = 1
            offset = w[t] - ws[t]
            recip = rup[t] if offset >= 0 else rdn[t]
            jt = min(last_j, (abs(offset) * recip) >> recip_shift)
            j[t] = jt if d[t] * offset < 0 else no_att
        for t in range(size):
            j[t] = lut_ext[j[t]]
        changed = 0
        for t in range(size):
            new = min(max(w[t] - ((d[t] * j[t] + r[t]) >> shift), w_min), w_max)
            w[t] = new
            out = (new < blo[t]) | (new >= bhi[t])
            moved[t] = out
            changed += out
        if changed:
            count = _events(
                lo, b0, moved[:size], w, lvl, bounds, counts[b0:b1], ev_addr, ev_old, ev_new, count
            )
    chunk_events[k] = count


@njit(parallel=True, **_JIT)
def fixed_update(source, fmt, dither, memory, tables, events):  # type: ignore[no-untyped-def]
    """Algorithm 1 in the contract's fixed point (:meth:`Contract.apply`) on every synapse.

    ``source``: ``(kind, d_int, a, b, c1, lr)``, the steps; ``fmt``: ``(scale, limit, w_min,
    w_max, round_shift, recip_shift)``; ``dither``: ``(stochastic, start, seed_hash, mask,
    nearest)``; ``memory``: ``(hidden, levels, counts)``, updated in place; ``tables``:
    ``(cells, bounds, recips, lut_ext)``: per level its value and its cell's bounds ``[lower,
    upper)`` (``L x 3``, open-ended at the ends), the level boundaries, per interval the
    reciprocal, and the LUT with ``M = 1`` appended (index N: no attenuation); ``events``:
    ``(address, old, new, chunk_events)``.
    """
    for k in prange(_chunks(memory[0])):
        _fixed_chunk(k, source, fmt, dither, memory, tables, events)


@njit(**_JIT)
def fixed_update_serial(source, fmt, dither, memory, tables, events):  # type: ignore[no-untyped-def]
    """:func:`fixed_update` on the calling thread (small layers: no pool to wake)."""
    for k in range(_chunks(memory[0])):
        _fixed_chunk(k, source, fmt, dither, memory, tables, events)


@njit(**_JIT)
def _float_meta_chunk(k, hidden, levels, cells, recip_widths, rule, x_out):  # type: ignore[no-untyped-def]
    two_mstar, mstar, _, _ = rule
    lo = k * CHUNK
    hi = min(hidden.shape[0], lo + CHUNK)
    ql, up, down = _temporaries(np.float32, 3)
    for b0 in range(lo, hi, BLOCK):
        b1 = min(hi, b0 + BLOCK)
        w = hidden[b0:b1]
        x = x_out[b0:b1]
        lvl = levels[b0:b1]
        for t in range(b1 - b0):
            ql[t] = cells[lvl[t], 0]
        _intervals(lvl, recip_widths, up, down)
        for t in range(b1 - b0):
            recip = up[t] if w[t] >= ql[t] else down[t]
            x[t] = recip * two_mstar * abs(w[t] - ql[t]) - mstar


@njit(parallel=True, **_JIT)
def float_meta(hidden, levels, cells, recip_widths, rule, x_out):  # type: ignore[no-untyped-def]
    """First half of the float rule (:func:`metaplast.rule.update`): the argument of Eq. 2's
    ``tanh`` for every synapse, as torch computes it, into ``x_out``. The ``tanh`` itself is
    torch's (its vectorized ``tanh`` is not libm's); :func:`float_update` finishes.
    ``cells``: per level its value and cell bounds (float32, ``L x 3``); ``rule``:
    ``(2 m*, m*, low, high)``."""
    for k in prange(_chunks(hidden)):
        _float_meta_chunk(k, hidden, levels, cells, recip_widths, rule, x_out)


@njit(**_JIT)
def float_meta_serial(hidden, levels, cells, recip_widths, rule, x_out):  # type: ignore[no-untyped-def]
    for k in range(_chunks(hidden)):
        _float_meta_chunk(k, hidden, levels, cells, recip_widths, rule, x_out)


@njit(**_JIT)
def _float_update_chunk(k, source, memory, tables, tanh_x, rule, events):  # type: ignore[no-untyped-def]
    kind, _, a, b, c1, lr = source
    hidden, levels = memory
    cells, bounds = tables
    ev_addr, ev_old, ev_new, chunk_events = events
    _, _, low, high = rule
    one = np.float32(1.0)
    no_counts = np.empty(0, np.int64)
    lo = k * CHUNK
    hi = min(hidden.shape[0], lo + CHUNK)
    ql, lower, upper, step = _temporaries(np.float32, 4)
    moved = np.empty(BLOCK, np.bool_)
    count = 0
    for b0 in range(lo, hi, BLOCK):
        b1 = min(hi, b0 + BLOCK)
        size = b1 - b0
        w = hidden[b0:b1]
        lvl = levels[b0:b1]
        th = tanh_x[b0:b1]
        _steps(kind, a[b0:b1], b[b0:b1], c1, lr, step)
        _cells(lvl, cells, ql, lower, upper)
        changed = 0
        for t in range(size):
            d = step[t]
            attenuated = d * (one - th[t] * th[t])
            d = attenuated if d * (w[t] - ql[t]) < 0 else d
            new = min(max(w[t] - d, low), high)
            w[t] = new
            out = (new < lower[t]) | (new >= upper[t])
            moved[t] = out
            changed += out
        if changed:
            count = _events(
                lo, b0, moved[:size], w, lvl, bounds, no_counts, ev_addr, ev_old, ev_new, count
            )
    chunk_events[k] = count


@njit(parallel=True, **_JIT)
def float_update(source, memory, tables, tanh_x, rule, events):  # type: ignore[no-untyped-def]
    """Second half of the float rule: ``M = 1 - tanh(x)**2`` from torch's ``tanh_x``, the
    conditional attenuation, the clip to the hidden range, the new level and the events.
    ``memory``: ``(hidden, levels)``; ``tables``: ``(cells, bounds)``."""
    for k in prange(_chunks(memory[0])):
        _float_update_chunk(k, source, memory, tables, tanh_x, rule, events)


@njit(**_JIT)
def float_update_serial(source, memory, tables, tanh_x, rule, events):  # type: ignore[no-untyped-def]
    for k in range(_chunks(memory[0])):
        _float_update_chunk(k, source, memory, tables, tanh_x, rule, events)


@njit(**_JIT)
def gather_events(ev_addr, ev_old, ev_new, chunk_events, out_addr, out_old, out_new):  # type: ignore[no-untyped-def]
    """The chunks' events, one after the other (address order), into the ``out_`` arrays."""
    pos = 0
    for k in range(chunk_events.shape[0]):
        lo = k * CHUNK
        for t in range(chunk_events[k]):
            out_addr[pos] = ev_addr[lo + t]
            out_old[pos] = ev_old[lo + t]
            out_new[pos] = ev_new[lo + t]
            pos += 1
