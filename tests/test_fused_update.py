"""The fused update (numba kernels) against the torch operations it replaces."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY
from hypothesis import given, settings
from hypothesis import strategies as st
from test_contract import CONTRACTS, UNEQUAL, spec_update
from test_session import epochs_without_time, tiny_args

from metaplast import fused_update, rule
from metaplast.cli import main
from metaplast.contract import Contract, address_hash
from metaplast.firmware_sim.unit.digital_unit import DigitalUnit
from metaplast.fused_update import AdamStep
from metaplast.host.config import SessionConfig
from metaplast.host.session import train
from metaplast.host.synapses import FloatSynapses

pytestmark = pytest.mark.skipif(
    fused_update.backend().name != "numba", reason="the fused kernels do not run here"
)


def adam_step(n: int, g: torch.Generator, scale: float = 1.0) -> AdamStep:
    m = torch.randn(n, generator=g) * 1e-3
    v = torch.rand(n, generator=g) * 1e-6
    return AdamStep(m, (v / 0.002).sqrt() + 1e-8, 0.19, 0.005 * scale)


def torch_update(unit: DigitalUnit, d: torch.Tensor, seed: int, start: int = 0) -> tuple:
    """The torch path's update of ``unit`` (what :meth:`DigitalUnit.update` did before)."""
    c = unit.contract
    span = slice(start, start + d.numel())
    hashes = address_hash(torch.arange(unit.synapses))[span]
    dither = c.dither(seed, hashes)
    level = unit.levels()[span].clone()
    new, before, after = c.apply(unit.hidden[span], d, unit.lut, dither=dither, level=level)
    changed = torch.nonzero(before != after).flatten()
    unit.hidden[span] = new
    unit.levels()[span] = after
    unit.change_count[span.start + changed] += 1
    return span.start + changed, before[changed], after[changed]


@pytest.mark.parametrize("ci", range(len(CONTRACTS)))
@pytest.mark.parametrize("kind", ["int", "float", "adam"])
def test_fixed_kernel_is_bit_identical_to_the_torch_path(ci: int, kind: str) -> None:
    """Every kind of step, on every contract (tables or arithmetic, stochastic or nearest,
    unequal levels), over several blocks: weights, levels, events and counters equal."""
    c = CONTRACTS[ci]
    g = torch.Generator().manual_seed(ci)
    n = 50_000  # several chunks
    w0 = c.hidden_to_int(torch.randn(n, generator=g) * 0.6)
    fused, ref = DigitalUnit(c, n), DigitalUnit(c, n)
    for unit in (fused, ref):
        unit.write(0, w0)
        unit.load_lut(3.0)
    for seed in range(4):
        step = adam_step(n, g, scale=20.0 if kind == "int" else 1.0)
        d_int = c.update_to_int(step.tensor())
        if kind == "int":
            events = fused.update(d_int, seed=seed)
        else:
            events = fused.update_step(step if kind == "adam" else step.tensor(), seed=seed)
        expected = torch_update(ref, d_int, seed)
        assert all(torch.equal(a, b) for a, b in zip(events, expected, strict=True))
        assert len(events) > 0
    assert torch.equal(fused.hidden, ref.hidden)
    assert torch.equal(fused.levels(), ref.levels())
    assert torch.equal(fused.change_count, ref.change_count)


@pytest.mark.parametrize("ci", range(len(CONTRACTS)))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_fixed_kernel_matches_the_scalar_spec(ci: int, data: st.DataObject) -> None:
    """The unit's update (the kernel) on a span at any start, against the spec written
    from the contract's docstring: the dither hashes the absolute address."""
    c = CONTRACTS[ci]
    n = data.draw(st.integers(1, 40))
    start = data.draw(st.integers(0, 100))
    special = list(c.level_ints) + list(c.boundary_ints) + [c.w_min, c.w_max, 0]
    w = data.draw(
        st.lists(
            st.one_of(st.integers(c.w_min, c.w_max), st.sampled_from(special)),
            min_size=n,
            max_size=n,
        )
    )
    dlim = 2 ** (c.update_width - 1)
    d = data.draw(
        st.lists(
            st.one_of(
                st.integers(-dlim, dlim - 1),
                st.integers(-(2**c.guard_bits), 2**c.guard_bits),
                st.sampled_from([0, -dlim, dlim - 1, 1, -1]),
            ),
            min_size=n,
            max_size=n,
        )
    )
    mstar = data.draw(st.sampled_from([0.0, 1.0, 3.0, 5.0]))
    seed = data.draw(st.integers(0, 2**32 - 1))
    unit = DigitalUnit(c, start + n)
    unit.write(start, w)
    unit.load_lut(mstar)
    events = unit.update(torch.tensor(d), start=start, seed=seed)
    dither = c.dither(seed, address_hash(torch.arange(start, start + n)))
    lut = c.meta_lut(mstar)
    expected = [
        spec_update(c, wi, di, lut, int(ri)) for wi, di, ri in zip(w, d, dither, strict=True)
    ]
    assert unit.read(start, n).tolist() == expected
    moved = c.level_of(torch.tensor(w)) != c.level_of(torch.tensor(expected))
    assert torch.equal(events.address, start + torch.nonzero(moved).flatten())


@pytest.mark.parametrize("arithmetic", ["fixed", "float"])
def test_kernels_do_not_depend_on_the_thread_count(arithmetic: str) -> None:
    """One thread runs the serial kernels, two the parallel ones: the same results."""
    c = Contract()
    g = torch.Generator().manual_seed(5)
    n = 100_000  # several chunks: the parallel kernels run
    w0 = torch.randn(n, generator=g) * 0.6
    step = adam_step(n, g, scale=4.0)
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        if arithmetic == "fixed":
            unit = DigitalUnit(c, n)
            unit.write(0, c.hidden_to_int(w0))
            unit.load_lut(3.0)
            events = unit.update_step(step, seed=9)
            results.append((unit.hidden.clone(), *events))
        else:
            syn = FloatSynapses(w0, c.levels)
            syn.set_mstar(3.0)
            events = syn.apply(step)
            results.append((syn.hidden.clone(), *events))
        assert len(events) > 100
    torch.set_num_threads(1)
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))


@pytest.mark.parametrize("levels", [rule.DEFAULT_LEVELS, UNEQUAL])
@pytest.mark.parametrize("kind", ["float", "adam"])
def test_float_kernel_is_bit_identical_to_the_rule(levels: tuple, kind: str) -> None:
    """Over several steps, at m* = 0 and 3: weights, levels and events equal the torch rule's
    (Eq. 2's tanh is torch's own, between the kernel's two halves)."""
    g = torch.Generator().manual_seed(2)
    n = 100_000
    w0 = torch.randn(n, generator=g) * 0.6
    fused = FloatSynapses(w0, levels)
    ref = FloatSynapses(w0, levels)
    for mstar in (0.0, 3.0, 3.0):
        fused.set_mstar(mstar)
        step = adam_step(n, g, scale=4.0)
        events = fused.apply(step if kind == "adam" else step.tensor())
        before = ref.level
        ref.hidden = rule.update(ref.hidden, step.tensor(), ref.level_values, mstar)
        ref.level = rule.level_index(ref.hidden, ref.level_values)
        moved = torch.nonzero(ref.level != before).flatten()
        assert torch.equal(fused.hidden, ref.hidden)
        assert torch.equal(fused.level, ref.level)
        assert torch.equal(events.address, moved) and len(moved) > 0
        assert torch.equal(events.old_level, before[moved])


def test_sessions_end_identically_with_the_kernels_and_without(
    data_dir: Path, tmp_path: Path
) -> None:
    """A fixed-point session run on the torch path (another process, with
    ``METAPLAST_KERNELS=torch``) ends exactly as on the kernels, and says so."""
    assert main(tiny_args(data_dir, tmp_path / "fused", "--threads", "1")) == 0
    fused = json.loads((tmp_path / "fused" / "metrics.json").read_text())
    out = tmp_path / "torch"
    args = tiny_args(data_dir, out, "--threads", "1")
    env = {**os.environ, fused_update.ENV: "torch"}
    proc = subprocess.run(
        [sys.executable, "-m", "metaplast.cli", *args], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("the fused update is not available: METAPLAST_KERNELS=torch") == 1
    slow = json.loads((out / "metrics.json").read_text())
    assert slow["update_kernel"] == {"backend": "torch", "detail": "METAPLAST_KERNELS=torch"}
    assert fused["update_kernel"]["backend"] == "numba"
    assert epochs_without_time(slow) == epochs_without_time(fused)
    assert slow["level_changes"] == fused["level_changes"]
    assert slow["programming"] == fused["programming"]


@pytest.mark.parametrize("arithmetic", ["fixed", "float"])
def test_two_thread_sessions_end_identically_on_the_torch_operations(
    data_dir: Path, tmp_path: Path, arithmetic: str
) -> None:
    """The parallel kernels (a layer of several chunks, two threads) in a whole session,
    against the torch operations in the same process: the same metrics, both arithmetics."""
    cfg = SessionConfig.of(**{**TINY, "hidden": (64,), "arithmetic": arithmetic})
    torch.set_num_threads(2)
    try:
        fused = train(cfg, tmp_path / "fused", data_dir, progress=False)
        with fused_update.torch_operations():
            slow = train(cfg, tmp_path / "torch", data_dir, progress=False)
    finally:
        torch.set_num_threads(1)
    assert slow["update_kernel"]["backend"] == "torch"
    assert fused["update_kernel"]["backend"] == "numba"
    assert epochs_without_time(slow) == epochs_without_time(fused)
    assert slow["level_changes"] == fused["level_changes"]


def test_a_missing_numba_falls_back_and_says_why() -> None:
    code = (
        "import sys; sys.modules['numba'] = None\n"
        "import torch\n"
        "from metaplast import fused_update\n"
        "from metaplast.contract import Contract\n"
        "from metaplast.firmware_sim.unit.digital_unit import DigitalUnit\n"
        "u = DigitalUnit(Contract(), 8)\n"
        "u.update(torch.full((8,), -(1 << 20)))\n"
        "print(fused_update.describe())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "numba cannot be imported" in proc.stderr and proc.stderr.count("metaplast:") == 1
    assert "'backend': 'torch'" in proc.stdout
