"""The crossbar: MVMs, programming order and disturbance, counters, endurance, stuck devices."""

from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from metaplast.firmware_sim.crossbar.array import Crossbar
from metaplast.firmware_sim.crossbar.devices import (
    US,
    ArrayGeometry,
    DeviceModel,
    StuckDevices,
    load_device,
)


@dataclass(frozen=True, eq=False)
class Exact(DeviceModel):
    """A test double: programming lands exactly; disturbance is ``k`` times 1 uS."""

    kind: ClassVar[str] = "exact"
    disturbing: bool = True

    @property
    def disturbs(self) -> bool:
        return self.disturbing

    def level_targets(self, magnitudes):
        return torch.tensor(magnitudes) * US

    def program(self, targets, gen):
        return targets.clone()

    def disturbance(self, after, gen):
        return after.to(torch.float32) * US


NO_STUCK = StuckDevices()


def exact(rows=2, cols=2, order="row-major", endurance=None, stuck=NO_STUCK, **kw):
    geo = ArrayGeometry(rows, cols, None, order)
    return Exact(Path("exact"), "test", 0.0, 0.0, endurance, stuck, geo, **kw)


def test_mvm_and_transposed_mvm_sum_currents_on_the_lines() -> None:
    xbar = Crossbar(exact(disturbing=False), 5, 7, seed=0)
    g = torch.rand(35) * 100 * US
    xbar.program(torch.arange(35), g)
    v = torch.randn(3, 5)
    currents = torch.tensor(
        [[sum(v[b, r] * g[r * 7 + c] for r in range(5)) for c in range(7)] for b in range(3)]
    )
    assert torch.allclose(xbar.mvm(v), currents, rtol=1e-5, atol=1e-12)
    u = torch.randn(3, 7)
    rows = torch.tensor(
        [[sum(u[b, c] * g[r * 7 + c] for c in range(7)) for r in range(5)] for b in range(3)]
    )
    assert torch.allclose(xbar.mvm_t(u), rows, rtol=1e-5, atol=1e-12)  # fmt: skip


@pytest.mark.parametrize("order", ["row-major", "column-major"])
def test_disturbance_follows_the_programming_order_within_each_tile(order: str) -> None:
    # a 4x4 array of 2x2 tiles; program three devices of tile 0 and one of tile 3
    xbar = Crossbar(exact(order=order), 4, 4, seed=0)
    index = torch.tensor([5, 0, 1, 15])  # (1,1), (0,0), (0,1) in tile 0; (3,3) in tile 3
    xbar.program(index, torch.full((4,), 100 * US))
    g = xbar.g / US
    # tile 0, row-major order (0,0) (0,1) (1,0) (1,1): (0,0) saw 2 after it, (0,1) 1, (1,1) 0
    # column-major (0,0) (1,0) (0,1) (1,1): the same here; (1,0) was left alone: saw all 3
    assert g[0] == pytest.approx(102) and g[1] == pytest.approx(101) and g[5] == pytest.approx(100)
    assert g[4] == pytest.approx(3)
    assert g[15] == pytest.approx(100) and g[10] == pytest.approx(1) and g[11] == pytest.approx(1)
    assert torch.all(g[[2, 3, 6, 7, 8, 9, 12, 13]] == 0)  # tiles nobody programmed
    if order == "column-major":
        xbar = Crossbar(exact(order=order), 2, 2, seed=0)
        # flat 2 is (1,0): in column-major order it is programmed before (0,1), flat 1
        xbar.program(torch.tensor([1, 2]), torch.full((2,), 50 * US))
        assert xbar.g[2] / US == pytest.approx(51) and xbar.g[1] / US == pytest.approx(50)


def test_counts_and_endurance() -> None:
    xbar = Crossbar(exact(endurance=3, disturbing=False), 2, 2, seed=0)
    for k in range(3):
        report = xbar.program(torch.tensor([0, 3]), torch.full((2,), (k + 1) * US))
        assert report.programmed == 2 and report.failed.numel() == 0
    report = xbar.program(torch.tensor([0, 2]), torch.full((2,), 9 * US))
    assert report.failed.tolist() == [0] and report.programmed == 1
    assert xbar.g[0] == pytest.approx(3 * US) and xbar.g[2] == pytest.approx(9 * US)
    assert xbar.counts.tolist() == [4, 0, 1, 3]
    report = xbar.program(torch.tensor([0]), torch.full((1,), 7 * US))
    assert report.failed.numel() == 0 and report.ignored == 1 and xbar.g[0] == pytest.approx(3 * US)
    with pytest.raises(ValueError, match="at most once"):
        xbar.program(torch.tensor([1, 1]), torch.zeros(2))


def test_stuck_devices_never_move() -> None:
    stuck = StuckDevices(hrs_rate=0.2, lrs_rate=0.2, hrs_range=(1 * US, 2 * US), lrs_mean=900 * US)
    xbar = Crossbar(exact(rows=4, cols=4, stuck=stuck), 8, 8, seed=1)
    assert 0 < int((xbar.stuck > 0).sum()) < 64
    before = xbar.g.clone()
    xbar.reset(5 * US)
    xbar.program(torch.arange(64), torch.full((64,), 300 * US))
    held = xbar.stuck > 0
    assert torch.equal(xbar.g[held], before[held])
    assert torch.all(xbar.g[~held] >= 300 * US)


def test_reset_is_not_counted_and_state_round_trips() -> None:
    dev = load_device("tio2-passive")
    a = Crossbar(dev, 16, 16, seed=5)
    a.reset(float(dev.g_min))
    assert int(a.counts.sum()) == 0
    a.program(torch.arange(0, 256, 3), torch.full((86,), 300 * US))
    b = Crossbar(dev, 16, 16, seed=99)
    b.load_state_dict(a.state_dict())
    for xbar in (a, b):
        xbar.program(torch.arange(1, 256, 5), torch.full((51,), 200 * US))
    assert torch.equal(a.g, b.g) and torch.equal(a.counts, b.counts)


def test_read_noise_is_fresh_on_every_read() -> None:
    dev = replace(exact(disturbing=False), read_noise=0.05)
    xbar = Crossbar(dev, 4, 4, seed=0)
    xbar.program(torch.arange(16), torch.full((16,), 100 * US))
    a, b = xbar.read(), xbar.read()
    assert not torch.equal(a, b)
    assert float((a / (100 * US) - 1).abs().max()) < 0.3
    assert torch.all(xbar.g == 100 * US)  # reading does not change the devices
