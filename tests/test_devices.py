"""Device models: the shipped files, what programming draws, and bad device files."""

import json
from pathlib import Path

import pytest
import torch

from metaplast.firmware_sim.crossbar.devices import (
    US,
    DeviceFileError,
    HfOx1T1R,
    TiO2Passive,
    data_path,
    load_device,
    measured_stuck_maps,
)

SHARED_TIO2 = Path(__file__).resolve().parents[1].parent / "shared/device-data/tio2-drolet2023"


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_shipped_files_load() -> None:
    hfox = load_device("hfox-1t1r")
    assert isinstance(hfox, HfOx1T1R) and len(hfox.means) == 9 and hfox.endurance == 100_000
    tio2 = load_device("tio2-passive")
    assert isinstance(tio2, TiO2Passive) and tio2.disturbs
    assert (tio2.g_min, tio2.g_max) == pytest.approx((100 * US, 500 * US))
    assert tio2.array.tile_rows == tio2.array.tile_cols == 8


def test_shipped_disturbance_database_is_the_measured_one() -> None:
    if not SHARED_TIO2.is_dir():
        pytest.skip("shared device data not beside the checkout")
    ours = json.loads(data_path("tio2-v3-disturbance.json").read_text())
    theirs = json.loads((SHARED_TIO2 / "v3_disturbance.json").read_text())
    assert ours == theirs


def test_hfox_programming_draws_from_the_level_distribution() -> None:
    dev = load_device("hfox-1t1r")
    for level in (4, 8):
        targets = torch.full((20_000,), dev.means[level])
        g = dev.program(targets, gen(level))
        assert float(g.mean()) == pytest.approx(dev.means[level], abs=0.1 * US)
        assert float(g.std()) == pytest.approx(dev.stds[level], rel=0.05)
    # the LCS spread reaches below zero: conductances stop at the floor
    g = dev.program(torch.full((20_000,), dev.means[0]), gen(0))
    assert float(g.min()) == pytest.approx(dev.floor) and float(g.median()) > dev.floor
    # single shot: programming the same target twice gives two different conductances
    a, b = dev.program(torch.full((4,), dev.means[3]), gen(1)).chunk(2)
    assert not torch.equal(a, b)


def test_hfox_weight_levels_follow_the_means() -> None:
    dev = load_device("hfox-1t1r")
    levels = dev.weight_levels(1.5)
    assert len(levels) == 17 and levels[8] == 0 and levels[-1] == pytest.approx(1.5)
    assert levels == pytest.approx(tuple(-v for v in reversed(levels)))
    uneven = HfOx1T1R(**{**dev.__dict__, "means": (1 * US, 11 * US, 41 * US)})
    assert uneven.weight_levels(1.0) == pytest.approx((-1.0, -0.25, 0.0, 0.25, 1.0))


def test_tio2_tuning_error_has_the_papers_moments() -> None:
    dev = load_device("tio2-passive")
    target = 300 * US
    g = dev.program(torch.full((40_000,), target), gen(2))
    rel = (g / target - 1) * 100  # percent
    std = -6.24e-4 * 300 + 0.691
    assert float(rel.mean()) == pytest.approx(-0.589, abs=0.02)
    assert float(rel.std()) == pytest.approx((std**2 + 0.339**2) ** 0.5, rel=0.03)


def test_tio2_disturbance_is_drawn_from_the_measured_lists() -> None:
    dev = load_device("tio2-passive")
    table = json.loads(data_path("tio2-v3-disturbance.json").read_text())["disturbance"]
    for k in (1, 10, 40):
        d = dev.disturbance(torch.full((500,), k), gen(k))
        measured = {float(torch.tensor(v, dtype=torch.float32)) for v in table[str(k)]}
        assert {float(v) for v in d} <= measured
        assert len({float(v) for v in d}) > 50  # many samples, not one
    # no later programming: no disturbance; a k with few samples borrows the nearest k below
    # that has at least 20 (k = 48 has 23, k = 49 has 18, k = 54 one, none above)
    assert torch.equal(dev.disturbance(torch.zeros(5, dtype=torch.int64), gen()), torch.zeros(5))
    assert len(table["48"]) >= 20 > len(table["49"]) and not table["55"]
    d = dev.disturbance(torch.full((200,), 63), gen(3))
    assert {float(v) for v in d} == {float(torch.tensor(v)) for v in table["48"]}


def test_stuck_devices_are_drawn_at_their_rates() -> None:
    dev = load_device("tio2-passive").with_overrides(stuck_hrs=0.1, stuck_lrs=0.05)
    kind, g = dev.stuck.sample((100_000,), dev.floor, gen(4))
    assert float((kind == 1).double().mean()) == pytest.approx(0.1, abs=0.005)
    assert float((kind == 2).double().mean()) == pytest.approx(0.05, abs=0.005)
    hrs = g[kind == 1]
    assert float(hrs.min()) >= 10 * US and float(hrs.max()) <= 100 * US
    assert float(g[kind == 2].mean()) == pytest.approx(573 * US, rel=0.02)
    assert torch.all(g[kind == 0] == 0)


def test_measured_stuck_maps_hold_hrs_stuck_devices() -> None:
    maps = measured_stuck_maps()
    assert len(maps) == 5 and all(r.shape == (8, 8) for _, r in maps)
    share = sum(int((r >= 1e5).sum()) for _, r in maps) / (5 * 64)
    assert 0 < share < 0.5


def write(tmp_path: Path, name: str, change) -> Path:
    data = json.loads(data_path(f"{name}.json").read_text())
    if name == "tio2-passive":
        data["disturbance"] = str(data_path(data["disturbance"]))
    change(data)
    path = tmp_path / "device.json"
    path.write_text(json.dumps(data))
    return path


def setv(key: str, value):
    def change(d: dict) -> None:
        *parents, last = key.split(".")
        for p in parents:
            d = d[p]
        d[last] = value

    return change


def drop(key: str):
    def change(d: dict) -> None:
        *parents, last = key.split(".")
        for p in parents:
            d = d[p]
        del d[last]

    return change


@pytest.mark.parametrize(
    "name, change, field, problem",
    [
        ("hfox-1t1r", drop("levels_uS.std"), "levels_uS.std", "missing"),
        ("hfox-1t1r", drop("array"), "array", "missing"),
        ("hfox-1t1r", setv("levels_uS.mean", [-5, 20, 35]), "levels_uS.mean[0]", "neg"),
        ("hfox-1t1r", setv("levels_uS.mean", list(range(125, 0, -15))), "levels_uS.mean", "sorted"),
        ("hfox-1t1r", setv("levels_uS.std", [1, 2]), "levels_uS.std", "9 values"),
        ("hfox-1t1r", setv("endurance", 0), "endurance", ">= 1"),
        ("hfox-1t1r", setv("array.order", "random"), "array.order", "one of"),
        ("hfox-1t1r", setv("model", "tio2-passive"), "model", "asked for"),
        ("tio2-passive", setv("conductance_uS", [500, 100]), "conductance_uS", "G_min < G_max"),
        ("tio2-passive", drop("tuning.std_percent"), "tuning.std_percent", "missing"),
        ("tio2-passive", setv("stuck.hrs_rate", 2), "stuck.hrs_rate", "[0"),
        ("tio2-passive", setv("disturbance", "nowhere.json"), "disturbance", "not a disturbance"),
    ],
)  # fmt: skip
def test_bad_device_files_name_the_file_and_field(
    tmp_path: Path, name: str, change, field: str, problem: str
) -> None:
    path = write(tmp_path, name, change)
    with pytest.raises(DeviceFileError) as err:
        load_device(name, path)
    message = str(err.value)
    assert str(path) in message and f"'{field}'" in message and problem in message


def test_unreadable_device_files(tmp_path: Path) -> None:
    with pytest.raises(DeviceFileError, match="cannot read"):
        load_device("hfox-1t1r", tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{ not json")
    with pytest.raises(DeviceFileError, match="not valid JSON"):
        load_device("hfox-1t1r", tmp_path / "broken.json")
    with pytest.raises(DeviceFileError, match="unknown device model"):
        load_device("pcm")
