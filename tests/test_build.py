"""``metaplast build``: real iCE40 builds with the YoWASP toolchain, the report's contract, the
bitstream's netlist under Icarus at the board's clock and baud, and every way a build fails.

One small iCEBreaker build (64 synapses) is shared by the module (about 40 s warm, plus about
60 s the first time YoWASP compiles its WebAssembly on a machine); the timing and fit failures
are real builds too.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from metaplast.boards.build import (
    MAC16_ADDER_NS,
    MAC16_MULTIPLY_NS,
    REPORT_KEYS,
    SEED_SPREAD,
    BuildError,
    build,
    dsp_path_ns,
    memory_for,
    parse_nextpnr_report,
    plan_overrides,
    split_plan,
)
from metaplast.boards.netlist_sim import simulate_netlist
from metaplast.boards.pinout import pinout_markdown
from metaplast.boards.platforms import BOARDS, PROG_CONTROL
from metaplast.boards.pll import pll_settings
from metaplast.cli import main
from metaplast.contract import Contract
from metaplast.protocol import Info, Layout

DATA = Path(__file__).parent / "data"
DOCS = Path(__file__).resolve().parents[1] / "docs"
SMALL = ["--synapses", "64", "--max-block", "64"]
SMALL_LAYOUT = Layout(Contract(), 64, max_block=64)


@pytest.fixture(scope="module")
def icebreaker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("icebreaker")
    assert main(["build", "--board", "icebreaker", *SMALL, "--out", str(out)]) == 0
    return out


def test_the_report_has_the_contract_keys(icebreaker: Path) -> None:
    report = json.loads((icebreaker / "report.json").read_text())
    assert set(REPORT_KEYS) <= set(report)
    assert report["board"] == "icebreaker"
    assert report["synapses"] == 64
    assert report["target_mhz"] == 12.0
    for key in ("luts", "ffs", "bram"):
        assert isinstance(report[key], int) and report[key] > 0, key
    assert isinstance(report["fmax_mhz"], float)
    assert report["fmax_mhz"] >= report["target_mhz"]
    assert report["bram"] <= report["bram_available"] == 30
    assert (report["baud"], report["baud_divisor"]) == (3_000_000, 4)
    assert report["info"]["synapses"] == 64
    assert report["info"]["clock_hz"] == 12_000_000
    # the first seed met the target: the only placement, the one kept
    assert report["seed"] == 1
    assert [p["seed"] for p in report["placements"]] == [1]
    assert report["placements"][0]["fmax_mhz"] == report["fmax_mhz"]
    # (from the unrounded Fmax)
    assert report["margin_percent"] == pytest.approx(100 * (report["fmax_mhz"] / 12 - 1), abs=0.1)


def test_the_bitstream_is_an_ice40_image(icebreaker: Path) -> None:
    report = json.loads((icebreaker / "report.json").read_text())
    bitstream = Path(report["bitstream"])
    assert bitstream.parent == icebreaker
    data = bitstream.read_bytes()
    assert len(data) > 100_000  # an UP5K image is 104,090 bytes
    assert b"\x7e\xaa\x99\x7e" in data[:64]  # the iCE40 sync word


def test_the_report_parser_reads_what_nextpnr_logged(icebreaker: Path) -> None:
    build_dir = icebreaker / "build"
    pr = parse_nextpnr_report(json.loads((build_dir / "metaplast.pnr.json").read_text()))
    log = (build_dir / "metaplast.tim").read_text()
    logged = re.findall(r"Max frequency for clock .*: ([\d.]+) MHz", log)[-1]
    assert pr.fmax_mhz == pytest.approx(float(logged), abs=0.005)
    assert pr.constraint_mhz == pytest.approx(12.0, abs=1e-3)
    used, avail = re.search(r"ICESTORM_RAM:\s+(\d+)/\s*(\d+)", log).groups()
    assert pr.utilization["ICESTORM_RAM"] == (int(used), int(avail))


def test_an_ecp5_report_parses() -> None:
    """A real nextpnr-ecp5 report (a ULX3S-85F build of 64 synapses, critical paths dropped)."""
    pr = parse_nextpnr_report(json.loads((DATA / "nextpnr-ecp5-report.json").read_text()))
    assert pr.fmax_mhz == pytest.approx(50.76, abs=0.005)  # its log: 50.76 MHz (PASS at 25.00)
    assert pr.constraint_mhz == 25
    assert pr.utilization["DP16KD"] == (2, 208)
    assert pr.utilization["MULT18X18D"] == (3, 156)


def _path(src: str, dst: str, *delays: float) -> dict:
    steps = [{"delay": d} for d in delays]
    return {"from": f"posedge {src}", "to": f"posedge {dst}", "path": steps}


def test_the_paths_through_the_ice40_multipliers_are_bounded() -> None:
    """nextpnr cuts the paths at an unregistered SB_MAC16 (a clock named after the ground net,
    0.10 ns of setup and clock-to-out): the bound puts the multiply and the second MAC16's
    adder back between the worst path in, the worst hop and the worst path out."""
    ghost = "$PACKER_GND_NET_$glb_clk"
    report = {
        "critical_paths": [
            _path("clk", "clk", 1.4, 10.0, 1.2),
            _path("clk", ghost, 1.4, 2.0, 0.1),
            _path(ghost, ghost, 0.1, 3.0, 0.1),
            _path(ghost, "clk", 0.1, 4.0, 1.2),
        ]
    }
    into, hop, out = 1.4 + 2.0, 3.0, 4.0 + 1.2
    expected = into + MAC16_MULTIPLY_NS + hop + MAC16_ADDER_NS + out
    assert dsp_path_ns(report) == pytest.approx(expected)
    # one MAC16 alone: no hop, no adder
    report["critical_paths"].pop(2)
    assert dsp_path_ns(report) == pytest.approx(into + MAC16_MULTIPLY_NS + out)
    # an ECP5's multipliers are timed: nothing to add
    ecp5 = json.loads((DATA / "nextpnr-ecp5-report.json").read_text())
    assert dsp_path_ns(ecp5) is None


def test_the_reported_fmax_is_the_router_s_or_icetime_s_if_slower(icebreaker: Path) -> None:
    report = json.loads((icebreaker / "report.json").read_text())
    pnr = json.loads((icebreaker / "build" / "metaplast.pnr.json").read_text())
    # every multiplier between its registers: nextpnr times the paths around them
    assert dsp_path_ns(pnr) is None and report["dsp_path_ns"] is None
    assert report["router_fmax_mhz"] == pytest.approx(parse_nextpnr_report(pnr).fmax_mhz, abs=0.01)
    rpt = (icebreaker / "build" / "metaplast.icetime.rpt").read_text()
    icetime_ns = float(re.search(r"Total path delay: ([\d.]+) ns", rpt).group(1))
    assert report["icetime_fmax_mhz"] == pytest.approx(1000 / icetime_ns, abs=0.01)
    expected = min(report["router_fmax_mhz"], 1000 / icetime_ns)
    assert report["fmax_mhz"] == pytest.approx(expected, abs=0.01)


def test_every_multiplier_runs_between_its_registers(icebreaker: Path) -> None:
    """Yosys moved the products' operand and result registers into each SB_MAC16 (none with
    a reset, a constant's multiplexer or a second multiplier behind): the multiply is inside
    the block, off the fabric's paths, and no MAC16 is left for the bound to cover."""
    netlist = json.loads((icebreaker / "build" / "metaplast.json").read_text())
    macs = [
        cell["parameters"]
        for module in netlist["modules"].values()
        for cell in module["cells"].values()
        if cell["type"] == "SB_MAC16"
    ]
    assert len(macs) == 3  # |offset| * reciprocal; |d| * M in two pieces
    for p in macs:
        registered = ("A_REG", "B_REG", "PIPELINE_16x16_MULT_REG1", "BOT_8x8_MULT_REG")
        assert all(int(p[name], 2) == 1 for name in registered), p


def test_the_header_pins_are_the_documented_ones(icebreaker: Path) -> None:
    pcf = (icebreaker / "build" / "metaplast.pcf").read_text()
    placed = dict(re.findall(r"set_io (prog_0__\S+) (\S+)", pcf))
    names = {
        "prog_strobe": "prog_0__strobe__io",
        "prog_busy_n": "prog_0__busy__io",
        "prog_device": "prog_0__device__io",
    }
    checked = 0
    for signal, _, fpga_pin in BOARDS["icebreaker"].pinout():
        m = re.fullmatch(r"prog_(level|addr)\[(\d+)\]", signal)
        port = f"prog_0__{m[1]}__io[{m[2]}]" if m else names[signal]
        if port in placed:
            assert placed[port] == fpga_pin, signal
            checked += 1
    assert checked == len(PROG_CONTROL) + 6  # 64 synapses: 6 address bits


def test_the_netlist_answers_like_the_model_at_the_board_clock_and_baud(
    icebreaker: Path,
) -> None:
    """The synthesized netlist, 12 MHz clock, host at 3 Mbaud in real time (ps), then 3 % slow
    and 3 % fast: the UART's promised margin at divisor 4 (a host 3 % fast was not understood
    before the receiver's sample point moved to the middle of the bit)."""
    report = json.loads((icebreaker / "report.json").read_text())
    board = BOARDS["icebreaker"]
    for error in (0.0, -0.03, 0.03):
        result = simulate_netlist(
            board, SMALL_LAYOUT, report, icebreaker / f"netsim{error}", baud_error=error
        )
        assert result.replies == result.expected, f"host {error:+.0%} off"
        assert result.strobes == result.expected_strobes
        assert result.ok
        assert len(result.strobes) > 0
    expected = Info.from_layout(SMALL_LAYOUT, clock_hz=12_000_000, baud_divisor=4)
    assert result.info == expected


def test_the_pll_netlist_answers_at_48_mhz_and_12_mbaud(tmp_path: Path) -> None:
    """The 48 MHz PLL build's netlist (an ideal clock driven in the PLL's place, its LOCK late),
    host at 12 Mbaud 3 % slow and 3 % fast: issue 18's rate on the clock that divides it. The
    build's target is lowered: the netlist Yosys writes does not depend on it, and whether the
    routing meets 48 MHz is the build report's to say, not this test's."""
    board = BOARDS["icebreaker"]
    report = build(board, SMALL_LAYOUT, tmp_path, clock_mhz=48, target_mhz=12)
    assert (report["clock_mhz"], report["baud"], report["baud_divisor"]) == (48, 12_000_000, 4)
    for error in (-0.03, 0.03):
        result = simulate_netlist(
            board, SMALL_LAYOUT, report, tmp_path / f"netsim{error}", baud_error=error
        )
        assert result.replies == result.expected, f"host {error:+.0%} off"
        assert result.ok and len(result.strobes) > 0
    assert result.info == Info.from_layout(SMALL_LAYOUT, clock_hz=48_000_000, baud_divisor=4)


def test_the_sweep_seeks_the_margin_and_keeps_the_fastest_placement(
    icebreaker: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A margin that puts the sweep's goal just above the shared build's Fmax (its target, the
    same 12 MHz, so the same placement: a target of its own would move the placement, which
    a test cannot foresee): seed 1 meets the target but not the goal, seed 2 is placed, and
    the faster of the two is kept; seed 1 kept means it was placed again, to the same Fmax (a
    seed's placement is reproducible)."""
    first = json.loads((icebreaker / "report.json").read_text())
    margin = round(100 * (first["fmax_mhz"] * 1.001 / 12 - 1), 2)
    argv = ["build", "--board", "icebreaker", *SMALL, "--out", str(tmp_path)]
    assert main([*argv, "--margin", str(margin), "--seeds", "2"]) == 0
    err = capsys.readouterr().err
    report = json.loads((tmp_path / "report.json").read_text())
    one, two = report["placements"][:2]
    assert one == first["placements"][0] and two["seed"] == 2
    assert f"seed 1 reaches {one['fmax_mhz']:.2f} MHz of 12 (the sweep seeks" in err
    assert "placing again with seed 2" in err
    assert (tmp_path / "build" / "metaplast.seed1.tim").exists()
    if two["fmax_mhz"] >= first["fmax_mhz"] * 1.001:
        assert report["seed"] == 2 and len(report["placements"]) == 2
    else:
        kept = max(one, two, key=lambda p: p["fmax_mhz"])
        assert f"placing seed {kept['seed']}, the fastest, again" in err
        assert report["placements"][2] == kept and report["seed"] == kept["seed"]
        assert report["fmax_mhz"] == kept["fmax_mhz"]


def test_split_plan_places_every_seed_from_one_synthesis(tmp_path: Path) -> None:
    """Amaranth's script for each open-toolchain family, cut where Yosys ends."""
    from amaranth.hdl import Elaboratable, Module, Signal

    class Blink(Elaboratable):
        def elaborate(self, platform: object) -> Module:
            m = Module()
            count = Signal(8)
            m.d.sync += count.eq(count + 1)
            return m

    for name in ("icebreaker", "ulx3s-85f"):
        board = BOARDS[name]
        plan = board.make_platform(board.clock_hz).prepare(
            Blink(), name="metaplast", **plan_overrides(board, 7)
        )
        plan.extract(str(tmp_path / name))
        synth, place = split_plan(tmp_path / name / f"{plan.script}.sh", 7)
        synth_text, place_text = synth.read_text(), place.read_text()
        assert '"$YOSYS"' in synth_text and "nextpnr" not in synth_text.split('"$YOSYS"')[1]
        assert '"$YOSYS"' not in place_text and '--seed "$SEED" ' in place_text
        assert "--seed 7" not in place_text and ("ICEPACK" in place_text) == (name == "icebreaker")
        with pytest.raises(BuildError, match="then nextpnr with --seed 8"):
            split_plan(tmp_path / name / f"{plan.script}.sh", 8)


def test_missing_the_target_clock_is_an_error_and_removes_the_old_bitstream(
    icebreaker: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    shutil.copytree(icebreaker, out, ignore=shutil.ignore_patterns("build", "netsim*"))
    assert (out / "report.json").exists()
    argv = ["build", "--board", "icebreaker", *SMALL, "--out", str(out), "--target-mhz", "200"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "fail timing" in err and "target is 200 MHz" in err
    # far beyond what another placement gains: the sweep ends at the first seed
    first = json.loads((icebreaker / "report.json").read_text())
    assert 200 * (1 - SEED_SPREAD) > first["fmax_mhz"]
    assert "(MHz by seed: 1: " in err and ", 2: " not in err and "placing again" not in err
    assert not (out / "report.json").exists()
    assert not list(out.glob("*.bin"))


def test_a_unit_that_does_not_fit_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["build", "--board", "icebreaker", "--synapses", "8192", "--memory", "block"]
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "8192 synapses do not fit the icebreaker" in err
    assert re.search(r"needs \d+ ICESTORM_RAM of 30", err)
    assert "--memory spram" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--synapses", "131072", "--memory", "block"], "carries 16 address bits"),
        (["--synapses", "32769"], "32769 synapses in SPRAM need 6 SPRAM (3 for the hidden"),
        (["--synapses", "65537", "--memory", "spram"], "need 10 SPRAM"),
        (["--synapses", "32768", "--counter-width", "8", "--hidden-width", "20"], "need 6 SPRAM"),
        (["--baud", "2500000"], "2500000 baud at 12000000 Hz"),
        (["--target-mhz", "-5"], "target clock must be positive"),
        (["--seeds", "0"], "at least one placer seed, not 0"),
        (["--margin", "-1"], "a percentage above the target, not -1"),
        (["--max-block", "0"], "max_block must be"),
        (["--baud", "1218000"], "the UART cannot run 1218000 baud at 12000000 Hz"),
        (["--clock-mhz", "50"], "SB_PLL40_PAD PLL cannot make 50 MHz from the 12 MHz"),
        (["--clock-mhz", "48", "--baud", "5000000"], "5000000 baud at 48000000 Hz"),
    ],
)
def test_bad_options_fail_before_any_tool_runs(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["build", "--board", "icebreaker", "--out", str(tmp_path / "o"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o" / "build").exists()


def test_spram_on_a_board_without_it_is_refused_before_any_tool_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["build", "--board", "ulx3s-85f", "--memory", "spram", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "the ulx3s-85f has no SPRAM; use --memory block" in capsys.readouterr().err
    assert not (tmp_path / "o" / "build").exists()


def test_auto_memory_takes_the_spram_where_block_ram_runs_out() -> None:
    ice, ecp5 = BOARDS["icebreaker"], BOARDS["ulx3s-85f"]
    assert memory_for(ice, Layout(Contract(), 2304)) == "block"
    assert memory_for(ice, Layout(Contract(), 2305)) == "spram"
    assert memory_for(ice, Layout(Contract(), 64), "spram") == "spram"
    assert memory_for(ice, Layout(Contract(), 32768), "block") == "block"
    assert memory_for(ecp5, Layout(Contract(), 102400)) == "block"


def test_the_pll_settings_are_the_vendor_tools_ones() -> None:
    """The settings icepll (12 -> 48 MHz) and ecppll (25 -> 100 MHz) print, as the boards'
    examples use them; what a PLL cannot make is refused."""
    ice = pll_settings("ice40", 12_000_000, 48e6)
    assert ice.primitive == "SB_PLL40_PAD" and ice.output_hz == 48e6
    assert {k: ice.parameters[k] for k in ("DIVR", "DIVF", "DIVQ", "FILTER_RANGE")} == {
        "DIVR": 0,
        "DIVF": 63,
        "DIVQ": 4,
        "FILTER_RANGE": 1,
    }
    ecp5 = pll_settings("ecp5", 25_000_000, 100e6)
    assert ecp5.primitive == "EHXPLLL" and ecp5.output_hz == 100e6
    assert {k: ecp5.parameters[k] for k in ("CLKI_DIV", "CLKFB_DIV", "CLKOP_DIV")} == {
        "CLKI_DIV": 1,
        "CLKFB_DIV": 4,
        "CLKOP_DIV": 6,
    }
    with pytest.raises(ValueError, match="nearest it makes is 50.2500 MHz"):
        pll_settings("ice40", 12_000_000, 50e6)
    with pytest.raises(ValueError, match="cannot make 1000 MHz"):
        pll_settings("ecp5", 25_000_000, 1e9)
    with pytest.raises(ValueError, match="no PLL is known for the xilinx family"):
        pll_settings("xilinx", 100_000_000, 200e6)


def test_an_unknown_board_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["build", "--board", "nexys", "--out", "unused"])
    assert exc.value.code == 2
    assert "invalid choice: 'nexys'" in capsys.readouterr().err


def test_the_arty_gets_a_vivado_project_with_the_header_pins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["build", "--board", "arty-a7", *SMALL, "--out", str(tmp_path)]) == 0
    assert "Vivado is needed" in capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["bitstream"] is None and report["fmax_mhz"] is None
    xdc = (tmp_path / "build" / "metaplast.xdc").read_text()
    locs = re.findall(r"set_property LOC (\S+) \[get_ports \"?prog_0__(\w+?)__io", xdc)
    header = {fpga for _, _, fpga in BOARDS["arty-a7"].pinout()}
    assert len(locs) == len(PROG_CONTROL) + 6
    assert {loc for loc, _ in locs} <= header


def test_the_header_refuses_more_than_it_carries() -> None:
    board = BOARDS["icebreaker"]
    platform = board.make_platform()
    with pytest.raises(ValueError, match="carries 16 address bits"):
        board.prog_resource(platform, 17, 4)
    with pytest.raises(ValueError, match="carries 4 level bits"):
        board.prog_resource(platform, 6, 5)


@pytest.mark.parametrize("name", list(BOARDS))
def test_the_bench_guide_has_the_pinout_the_code_uses(name: str) -> None:
    assert pinout_markdown(BOARDS[name]) in (DOCS / "bench.md").read_text()


def test_a_board_build_uses_the_default_baud_only_where_it_is_exact() -> None:
    for board in BOARDS.values():
        divisor = round(board.clock_hz / board.baud)
        assert board.clock_hz == divisor * board.baud, board.name


def test_the_default_baud_is_the_fastest_exact_rate_the_clock_allows() -> None:
    ice, ulx3s = BOARDS["icebreaker"], BOARDS["ulx3s-85f"]
    assert (ice.baud, ulx3s.baud) == (3_000_000, 1_000_000)  # at the oscillators: unchanged
    assert ice.baud_at(48_000_000) == 12_000_000  # the FT2232H's fastest, divisor 4
    assert ulx3s.baud_at(100_000_000) == 2_000_000  # 3 Mbaud would need a divisor of 33.3
    assert ice.baud_at(16_000_000) == 4_000_000  # 12 Mbaud would need a divisor below 4
    with pytest.raises(ValueError, match="ulx3s-85f: no rate the FTDI FT231X .* 12500000 Hz"):
        ulx3s.baud_at(12_500_000)
