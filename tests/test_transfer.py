"""Simulated transfers onto crossbars and hardware-aware training (paper 004)."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import TINY
from test_session import epochs_without_time, interrupted_and_resumed, tiny_args
from torch import nn

from metaplast.cli import main
from metaplast.contract import Contract
from metaplast.errors import ConfigError
from metaplast.firmware_sim.crossbar.devices import TiO2Passive, load_device, measured_stuck_maps
from metaplast.firmware_sim.crossbar.transfer import PaperCodeSampler, TransferSampler
from metaplast.firmware_sim.crossbar.write_plan import (
    ReadVerify,
    WritePlan,
    WritePlanError,
    tile_block,
    tile_order,
)
from metaplast.host.config import SessionConfig
from metaplast.host.hardware_aware import HardwareAware, LevelTransfers, TransferStats
from metaplast.host.session import train


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_an_ideal_transfer_gives_the_weights_back() -> None:
    exact = load_device("tio2-passive").with_overrides(stuck_hrs=0, stuck_lrs=0)
    exact = replace(exact, std_slope=0, std_base=0, offset_mean=0, offset_std=0,
                    disturb_samples=None, disturb_start=None, disturb_count=None)  # fmt: skip
    w = torch.randn(5, 7)
    t = TransferSampler(exact, (5, 7)).sample(w, 3, gen())
    assert torch.allclose(t.weights, w.expand(3, 5, 7), atol=1e-5)
    assert not t.stuck.any()


def _exact() -> TiO2Passive:
    dev = load_device("tio2-passive").with_overrides(stuck_hrs=0, stuck_lrs=0)
    return replace(dev, std_slope=0, std_base=0, offset_mean=0, offset_std=0,
                   disturb_samples=None, disturb_start=None, disturb_count=None)  # fmt: skip


@pytest.mark.parametrize("coordinates", ["paper-code", "physical"])
@pytest.mark.parametrize("shape", [(8, 2), (1, 8), (8,)])
def test_the_paper_codes_transfer_gives_ideal_weights_back(shape: tuple, coordinates: str) -> None:
    sampler = PaperCodeSampler(_exact(), shape, coordinates)
    mixed = torch.randn(shape, generator=gen(2))
    mixed.view(-1)[:2] = torch.tensor([-1.0, 1.0])
    for w in (mixed, mixed.abs() + 0.1):  # a pair per weight, and one device per weight
        t = sampler.sample(w, 3, gen())
        assert torch.allclose(t.weights, w.expand(3, *shape), atol=1e-5)
        assert not t.stuck.any()


def test_the_paper_codes_programming_order() -> None:
    """The device at position p of n takes the entry for n - p later programmings, output
    index fastest, the last device none (the code's count is one more than were after it)."""
    dev = load_device("tio2-passive")
    fc1 = PaperCodeSampler(dev, (8, 2)).after.reshape(8, 2)
    assert fc1[:, 0].tolist() == list(range(16, 8, -1))
    assert fc1[:, 1].tolist() == [8, 7, 6, 5, 4, 3, 2, 0]
    assert PaperCodeSampler(dev, (1, 8)).after.tolist() == [8, 7, 6, 5, 4, 3, 2, 0]
    assert PaperCodeSampler(dev, (8,)).after.tolist() == [8, 7, 6, 5, 4, 3, 2, 0]


def test_the_paper_codes_coordinates_halve_an_additive_disturbance() -> None:
    """The same conductance change weighs half as much in the code's coordinates (a
    component spans 2 S = 800 uS per max |w|) as on the physical range (S)."""
    samples = torch.tensor([-8e-6, 0.0, 8e-6, 16e-6])  # G+ and G- draw apart, so no cancelling
    dev = replace(_exact(), disturb_samples=samples,
                  disturb_start=torch.zeros(60, dtype=torch.int64),
                  disturb_count=torch.full((60,), 4, dtype=torch.int64))  # fmt: skip
    w = torch.tensor([[0.5, -1.0], [0.25, 0.0]])
    shifts = {}
    for coordinates in ("paper-code", "physical"):
        t = PaperCodeSampler(dev, (2, 2), coordinates).sample(w, 8, gen())
        shifts[coordinates] = t.weights - w
    assert shifts["paper-code"].abs().max() > 0.01
    assert torch.allclose(shifts["physical"], 2 * shifts["paper-code"], atol=1e-5)


def test_the_paper_bias_placement_keeps_a_single_output_bias_exact() -> None:
    model = nn.Sequential(nn.Linear(2, 8), nn.Sigmoid(), nn.Linear(8, 1))
    hw = HardwareAware(model, load_device("tio2-passive"), 0, bias="paper", sampler="paper-code")
    mapped = [name for g in hw.mapped for name in g.names]
    assert mapped == ["0.weight", "0.bias", "2.weight"]
    params = hw.training_params()
    assert "2.bias" not in params and set(hw.last_stuck) == set(mapped)


def test_stuck_weights_keep_their_gradient_in_the_paper_codes_training() -> None:
    dev = load_device("tio2-passive").with_overrides(stuck_hrs=0.3, stuck_lrs=0.3)
    for stuck_gradient in (False, True):
        model = nn.Sequential(nn.Linear(2, 8), nn.Sigmoid(), nn.Linear(8, 1))
        hw = HardwareAware(model, dev, 0, bias="digital", stuck_gradient=stuck_gradient)
        hw.forward(torch.randn(16, 2)).sum().backward()
        stuck = hw.last_stuck["0.weight"]
        assert stuck.any()
        assert bool((model[0].weight.grad[stuck] != 0).any()) == stuck_gradient


def test_transfers_carry_the_devices_statistics() -> None:
    dev = load_device("tio2-passive").with_overrides(stuck_hrs=0.1, stuck_lrs=0.1)
    sampler = TransferSampler(dev, (8, 8))
    # the last device of a full tile is tuned last: nothing disturbs it; the first sees all
    assert int(sampler.after.min()) == 0 and int(sampler.after.max()) == 63
    w = torch.linspace(-1, 1, 64).reshape(8, 8)
    t = sampler.sample(w, 4000, gen(1))
    share = float(t.stuck.double().mean())
    assert share == pytest.approx(1 - 0.8**2, abs=0.01)  # either device of the pair
    err = (t.weights - w)[~t.stuck]
    assert 0.005 < float(err.abs().mean()) < 0.2
    assert float(err.mean()) < 0  # tuning offset and V/3 disturbance are both negative


def test_hardware_aware_forward_is_differentiable_and_spares_stuck_weights() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 1))
    dev = load_device("tio2-passive").with_overrides(stuck_hrs=0.3, stuck_lrs=0.3)
    hw = HardwareAware(model, dev, seed=0)
    out = hw.forward(torch.randn(6, 3))
    out.sum().backward()
    grad = model[0].weight.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert (grad == 0).any() and (grad != 0).any()  # stuck weights get no gradient
    with pytest.raises(ValueError, match="no torch.nn.Linear"):
        HardwareAware(nn.Sigmoid(), dev, seed=0)


def test_transfer_statistics() -> None:
    correct = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    stats = TransferStats(correct)
    s = stats.summary()
    assert s["share_ge_95"] == pytest.approx(1 / 3)
    assert s["share_ge_90"] == pytest.approx(1 / 3)
    assert s["accuracy_mean"] == pytest.approx(8 / 12)
    # per point: 4/4, 3/4, 1/4 of the transfers
    assert stats.table() == {
        "100": 1, "95-100": 0, "90-95": 0, "80-90": 0, "70-80": 1, "60-70": 0, "50-60": 0,
        "<50": 1,
    }  # fmt: skip


def test_level_transfers_match_the_linear_mapping_on_a_tunable_device() -> None:
    """Levels go onto device levels as the programming port asks; on a linear device that is
    the linear mapping of their values (the top level present), draw for draw."""
    contract = Contract()
    dev = load_device("tio2-passive").with_overrides(stuck_hrs=0.05, stuck_lrs=0.05)
    levels = torch.randint(0, len(contract.levels), (6, 9), generator=gen(2))
    levels[0, 0] = len(contract.levels) - 1
    values = contract.level_values()[levels].float()
    sampler = TransferSampler(dev, (6, 9))
    by_level = sampler.sample_levels(levels, contract, 50, gen(3))
    linear = sampler.sample(values, 50, gen(3))
    assert torch.allclose(by_level.weights, linear.weights, atol=1e-5)
    assert torch.equal(by_level.stuck, linear.stuck)


def test_level_transfers_onto_1t1r_cells() -> None:
    contract = Contract()
    hfox = load_device("hfox-1t1r")
    levels = torch.randint(0, len(contract.levels), (5, 7), generator=gen(4))
    values = contract.level_values()[levels].float()
    exact = replace(hfox.with_overrides(stuck_hrs=0, stuck_lrs=0), stds=(0.0,) * len(hfox.stds))
    t = TransferSampler(exact, (5, 7)).sample_levels(levels, contract, 3, gen())
    assert torch.allclose(t.weights, values.expand(3, 5, 7), atol=1e-5)
    spread = TransferSampler(hfox, (5, 7)).sample_levels(levels, contract, 2000, gen(5))
    err = spread.weights - values
    assert 0 < float(err.std()) < 0.5 and abs(float(err.mean())) < 0.02
    with pytest.raises(TypeError, match="discrete levels"):
        TransferSampler(hfox, (5, 7)).sample(values, 1, gen())


def test_level_transfers_train_through_a_transfer_and_test_on_the_ideal_weights() -> None:
    contract = Contract()
    dev = load_device("tio2-passive").with_overrides(stuck_hrs=0.2, stuck_lrs=0.2)
    levels = torch.randint(0, len(contract.levels), (4, 12), generator=gen(6))
    w = contract.level_values()[levels].float().requires_grad_(True)
    training = [True]
    ha = LevelTransfers([lambda: levels], [(4, 12)], contract, dev, lambda: training[0], gen())
    mvm = ha.mvm(0)
    x = torch.randn(10, 12, generator=gen(7))
    out = mvm(x, w)
    assert not torch.allclose(out, x @ w.t())
    out.sum().backward()
    assert w.grad is not None and (w.grad == 0).any() and (w.grad != 0).any()
    training[0] = False
    assert torch.equal(mvm(x, w), x @ w.t())


def test_cli_writes_the_transfer_contract(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["transfer", "--dataset", "moons", "--training", "hardware-aware", "--seed", "1"]
    quick = ["--transfers", "500", "--epochs", "300", "--ha-epochs", "50"]
    assert main([*args, *quick, "--out", str(out)]) == 0
    rec = json.loads((out / "transfer.json").read_text())
    assert 0 <= rec["share_ge_95"] <= rec["share_ge_90"] <= 1
    assert 0.5 < rec["accuracy_mean"] <= 1
    assert len(rec["per_point"]) == 200 and sum(rec["table"].values()) == 200
    assert rec["training"] == "hardware-aware" and rec["config"]["transfers"] == 500
    for name in ("model.pt", "accuracy.png", "variability.png"):
        assert (out / name).is_file()
    assert rec["write_plan"]["order"] == "device-file" and not rec["write_plan"]["known_stuck"]
    assert rec["write_cost"]["operations_per_device"] == 1.0
    assert rec["write_cost"]["devices"] == 2 * (8 * 3 + 9) and rec["write_cost"]["tiles"] == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--training", "magic"], "--training must be one of"),
        (["--crossbar", "hfox-1t1r"], "--crossbar tio2-passive"),
        (["--dataset", "mnist"], "give --from RUN"),
        (["--dataset", "mnist", "--from", "x", "--training", "regular"], "leave --training out"),
        (["--stuck-lrs", "2"], "--stuck-lrs must be in"),
        (["--transfers", "0"], "--transfers must be >= 1"),
        (["--recipe", "paper"], "--recipe must be one of"),
        (["--sampler", "exact"], "--sampler must be one of"),
        (["--init", "zeros"], "--init must be one of"),
        (["--ha-start", "middle"], "--ha-start must be one of"),
        (["--weight-decay", "-1"], "--weight-decay must be >= 0"),
        (["--verify-tolerance", "0"], "tolerance must be > 0 uS"),
        (["--verify-tolerance", "-3"], "tolerance must be > 0 uS"),
        (["--verify-tolerance", "5", "--verify-iterations", "0"], "at least 1 iteration"),
        (["--verify-iterations", "3"], "--verify-iterations needs --verify-tolerance"),
        (["--tile-order", "0,1,2"], "--tile-order: tile order is not a permutation"),
        (["--tile-order", "1,1," + ",".join(map(str, range(2, 64)))], "not a permutation"),
        (["--tile-order", "nowhere.txt"], "neither one of"),
        (["--tile-block", "9x2"], "does not fit the device's 8x8 tile"),
        (["--tile-block", "2x2", "--tile-order", "row-major"], None),
        (["--tile-block", "two"], "expected ROWSxCOLS"),
        (["--stuck-map", "maybe"], "--stuck-map must be one of"),
        (["--recipe", "paper-code", "--stuck-map", "known"], "use them with --sampler project"),
    ],
)
def test_cli_rejects_bad_transfer_options(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x"
    if message is None:  # a valid neighbour of the bad options: it must get past the checks
        args = [*args, "--transfers", "20", "--epochs", "2", "--ha-epochs", "1"]
        assert main(["transfer", *args, "--out", str(out)]) == 0
        return
    assert main(["transfer", *args, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_tile_orders_are_permutations_of_the_tile_or_block(tmp_path: Path) -> None:
    geo = load_device("tio2-passive").array
    for name in ("row-major", "column-major", "reverse"):
        order = tile_order(name, geo)
        assert order is not None and sorted(order) == list(range(64))
    assert tile_order("column-major", geo, (2, 3)) == (0, 3, 1, 4, 2, 5)
    assert tile_order("device-file", geo) is None
    path = tmp_path / "order.txt"
    path.write_text(" ".join(map(str, reversed(range(6)))) + "\n")
    assert tile_order(str(path), geo, (2, 3)) == (5, 4, 3, 2, 1, 0)
    assert tile_order("1,0,2,3", geo, (2, 2)) == (1, 0, 2, 3)
    for bad in ("0,1,2,4", "0,1,2", "0,1,2,3,3", "a,b,c,d"):
        with pytest.raises(WritePlanError):
            tile_order(bad, geo, (2, 2))
    assert tile_block("3x2", geo) == (3, 2) and tile_block(None, geo) is None
    for bad in ("0x2", "9x1", "3", "3x2x1"):
        with pytest.raises(WritePlanError):
            tile_block(bad, geo)
    with pytest.raises(WritePlanError, match="> 0 uS"):
        ReadVerify(0.0, 3)
    with pytest.raises(WritePlanError, match="at least 1 iteration"):
        ReadVerify(1e-6, 0)


def test_the_tile_order_decides_which_device_is_disturbed_most() -> None:
    """``k`` (programmings after a device in its tile) follows the plan's order: 1 x 3 takes
    3 rows x 2 columns of one tile, G+ and G- side by side."""
    dev = load_device("tio2-passive")
    rows_first = TransferSampler(dev, (1, 3)).after  # 2 (G+, G-) x 3 (rows)
    assert rows_first.tolist() == [[5, 3, 1], [4, 2, 0]]
    explicit = TransferSampler(dev, (1, 3), WritePlan(order=tile_order("row-major", dev.array)))
    assert torch.equal(explicit.after, rows_first)
    reverse = TransferSampler(dev, (1, 3), WritePlan(order=tile_order("reverse", dev.array)))
    assert reverse.after.tolist() == [[0, 2, 4], [1, 3, 5]]
    columns = TransferSampler(dev, (1, 3), WritePlan(order=tile_order("column-major", dev.array)))
    assert columns.after.tolist() == [[5, 4, 3], [2, 1, 0]]
    blocks = TransferSampler(dev, (1, 3), WritePlan(block=(1, 2)))  # one row per tile
    assert blocks.after.tolist() == [[1, 1, 1], [0, 0, 0]] and blocks.tiles == 3


def test_read_verify_brings_every_working_device_within_its_tolerance() -> None:
    """Without disturbance, re-programming converges; each pass is counted."""
    dev = replace(load_device("tio2-passive"), disturb_samples=None).with_overrides(
        stuck_hrs=0, stuck_lrs=0
    )
    w = torch.randn(6, 5, generator=gen(1))
    plan = WritePlan(verify=ReadVerify(1e-6, 40))
    sampler = TransferSampler(dev, (6, 5), plan)
    t = sampler.sample(w, 50, gen())
    unit = (dev.g_max - dev.g_min) / float(w.abs().max())
    assert float((t.weights - w).abs().max()) <= 2e-6 / unit + 1e-6
    plain = TransferSampler(dev, (6, 5)).sample(w, 50, gen())
    assert float((plain.weights - w).abs().max()) > 2e-6 / unit
    assert t.operations is not None and t.reads is not None
    assert bool((t.operations > sampler.devices).all())  # somebody was re-programmed
    assert bool((t.reads >= 2).all()) and bool((t.reads <= 41).all())


def test_a_known_stuck_map_is_avoided_or_made_up_for_by_the_pair() -> None:
    exact = _exact()
    w = torch.randn(4, 6, generator=gen(3))
    unit = (exact.g_max - exact.g_min) / float(w.abs().max())
    lrs = exact.with_overrides(stuck_lrs=0.3)  # stuck at 573 +- 99 uS
    t = TransferSampler(lrs, (4, 6), WritePlan(stuck_map="known")).sample(w, 200, gen())
    err = (t.weights - w).abs()
    assert bool(t.stuck.any()) and bool((~t.stuck).any())
    assert float(err[~t.stuck].max()) < 1e-4  # compensated exactly, within the range
    assert float(err[t.stuck].mean()) > 30e-6 / unit  # out of range: off by tens of uS
    unknown = TransferSampler(lrs, (4, 6)).sample(w, 200, gen())
    assert float((unknown.weights - w).abs().mean()) > 3 * float(err.mean())
    # a 1 x 1 block in each 8 x 8 tile: the lab puts it on a working device
    spread = TransferSampler(lrs, (4, 6), WritePlan(stuck_map="known", block=(1, 1)))
    t = spread.sample(w, 200, gen())
    assert not t.stuck.any() and torch.allclose(t.weights, w.expand(200, 4, 6), atol=1e-4)
    assert spread.tiles == 48 and t.operations is not None
    assert bool((t.operations == spread.devices).all())


def test_the_measured_arrays_as_the_chip() -> None:
    """Tile t on measured array t mod 5: the same dead devices in every transfer, avoided by
    a small block, made up for by the pair (or lost) in a full tile."""
    exact = replace(_exact(), stuck=load_device("tio2-passive").stuck)  # rates unused
    w = torch.randn(4, 8, generator=gen(4))  # 8 rows x 8 columns: one tile, array HD
    full = TransferSampler(exact, (4, 8), WritePlan(stuck_map="measured")).sample(w, 3, gen())
    assert bool(full.stuck.any()) and torch.equal(full.stuck[0], full.stuck[1])
    assert torch.equal(full.weights[0], full.weights[2])  # nothing random left
    small = WritePlan(stuck_map="measured", block=(2, 2))
    t = TransferSampler(exact, (4, 8), small).sample(w, 3, gen())
    assert not t.stuck.any() and torch.allclose(t.weights, w.expand(3, 4, 8), atol=1e-4)
    with pytest.raises(ValueError, match="8 x 8 TiO2"):
        TransferSampler(load_device("hfox-1t1r"), (4, 8), WritePlan(stuck_map="measured"))
    # the lab's map of where the blocks go: every used device works, matrices side by side
    model = nn.Sequential(nn.Linear(2, 8), nn.Sigmoid(), nn.Linear(8, 1))
    hw = HardwareAware(model, exact, 0, "row", plan=small)
    places = [p for g in hw.mapped for p in g.sampler.placement()]  # type: ignore[union-attr]
    assert [p["tile"] for p in places] == list(range(len(places))) == list(range(21))
    ohms = dict(measured_stuck_maps())
    for p in places:
        g = 1 / ohms[p["array"]][p["rows"]][:, p["cols"]]
        assert bool((g >= exact.g_min).all())


def test_hardware_aware_session_options() -> None:
    with pytest.raises(ConfigError, match="give one of them"):
        SessionConfig.of(**TINY, crossbar="hfox-1t1r", hardware_aware="tio2-passive")
    with pytest.raises(ConfigError, match="`endurance`"):
        SessionConfig.of(**TINY, hardware_aware="tio2-passive", endurance=3)
    with pytest.raises(ConfigError, match="`hardware_aware` must be one of"):
        SessionConfig.of(**TINY, hardware_aware="ideal")
    cfg = SessionConfig.of(**TINY, hardware_aware="hfox-1t1r", stuck_lrs=0.01)
    assert cfg.device_model is not None and cfg.device_model.stuck.lrs_rate == 0.01


def test_hardware_aware_session_resumes_bit_identically(data_dir: Path, tmp_path: Path) -> None:
    cfg = SessionConfig.of(**{**TINY, "hardware_aware": "tio2-passive"})
    whole = train(cfg, tmp_path / "whole", data_dir, progress=False)
    regular = train(SessionConfig.of(**TINY), tmp_path / "regular", data_dir, progress=False)
    assert whole["hardware_aware"]["model"] == "tio2-passive" and regular["hardware_aware"] is None
    # the transfers change what the network learns
    assert epochs_without_time(whole) != epochs_without_time(regular)
    resumed = interrupted_and_resumed(cfg, tmp_path / "part", data_dir)
    assert epochs_without_time(resumed) == epochs_without_time(whole)


def test_cli_transfers_a_session_network(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "session"
    assert main(tiny_args(data_dir, src, "--hardware-aware", "hfox-1t1r")) == 0
    out = tmp_path / "transfer"
    args = ["transfer", "--dataset", "mnist", "--from", str(src), "--data-dir", str(data_dir)]
    assert main([*args, "--crossbar", "hfox-1t1r", "--transfers", "6", "--out", str(out)]) == 0
    rec = json.loads((out / "transfer.json").read_text())
    assert rec["training"] == "hardware-aware" and rec["config"]["transfers"] == 6
    assert set(rec["tasks"]) == {"mnist", "fashion-mnist"}
    for task in rec["tasks"].values():
        assert sum(task["table"].values()) == 10_000
        assert 0 <= task["share_ge_95"] <= task["share_ge_90"] <= 1
    assert 0.1 < rec["accuracy_mean"] <= 1
    pooled = rec["tasks"]["mnist"]["accuracy_mean"] + rec["tasks"]["fashion-mnist"]["accuracy_mean"]
    assert rec["accuracy_mean"] == pytest.approx(pooled / 2)
    assert rec["write_cost"]["operations_per_device"] == 1.0
    # the same network written with read-verify and a known stuck map onto TiO2
    lab = ["--stuck-map", "known", "--verify-tolerance", "5", "--verify-iterations", "2"]
    assert main([*args, *lab, "--transfers", "2", "--out", str(tmp_path / "lab")]) == 0
    rec = json.loads((tmp_path / "lab" / "transfer.json").read_text())
    assert rec["write_plan"]["known_stuck"] and rec["write_plan"]["verify_iterations"] == 2
    cost = rec["write_cost"]
    assert 1.0 < cost["operations_per_device"] <= 3.0
    assert 2.0 <= cost["read_passes_per_array"] <= 4.0  # the map, then up to 1 + 2 passes
    # an unfinished session is refused, and nothing is written
    (src / "checkpoint.pt").write_bytes(b"not a checkpoint")
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "bad")]) == 2
    assert "checkpoint.pt cannot be read" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_bias_placement() -> None:
    """A bias on the crossbar is transferred with the weights' scale (row) or its own
    (separate); a digital bias is exact on every transfer."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.mul_(0.01)  # the bias sets the scale of a shared matrix
        model.bias.copy_(torch.tensor([1.0, -0.5]))
    dev = load_device("tio2-passive")
    zero = torch.zeros(1, 3)
    spread = {}
    for bias in ("row", "separate", "digital"):
        hw = HardwareAware(model, dev, seed=0, bias=bias)
        assert [g.sampler.shape for g in hw.mapped] == {
            "row": [(2, 4)], "separate": [(2, 3), (2, 1)], "digital": [(2, 3)]
        }[bias]  # fmt: skip
        out = hw.transfer_outputs(zero, 200)[:, 0]
        spread[bias] = float((out - model.bias.detach()).abs().max())
    assert spread["digital"] == 0
    assert spread["row"] > 0 and spread["separate"] > 0
    with pytest.raises(ValueError, match="bias must be one of"):
        HardwareAware(model, dev, seed=0, bias="magic")
