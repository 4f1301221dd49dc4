"""A unit with the crossbar port on a board: the link's pins, the top level with the link or a
lab's own driver, and ``--crossbar-tile``. No place and route here (tests/test_build.py and
docs/results.md section 11 have the builds)."""

from __future__ import annotations

import gc
import re
import warnings
from pathlib import Path

import pytest
from amaranth.build import Attrs, Pins, Resource
from amaranth.hdl import Module, UnusedElaboratable
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In

from metaplast.boards.board_top import BoardTop
from metaplast.boards.build import build
from metaplast.boards.pinout import xbar_pinout_markdown
from metaplast.boards.platforms import BOARDS, Board
from metaplast.cli import main
from metaplast.contract import Contract
from metaplast.gateware.crossbar_link import CrossbarLink
from metaplast.gateware.crossbar_port import CrossbarPort
from metaplast.gateware.top import DigitalUnitTop
from metaplast.protocol import Layout

DOCS = Path(__file__).resolve().parents[1] / "docs"
LAYOUT = Layout(Contract(), 64, max_block=64)
TILE = 8


def unit_for(board: Board, crossbar: int | None = TILE) -> DigitalUnitTop:
    divisor = round(board.clock_hz / board.baud)
    return DigitalUnitTop(LAYOUT, clock_hz=board.clock_hz, baud_divisor=divisor, crossbar=crossbar)


def prepared(board: Board, top_of: type[BoardTop] = BoardTop, **kw: object) -> dict[str, str]:
    """The files of the build plan of a unit with the port on ``board``: its RTLIL or Verilog
    and its pin constraints (no tool runs)."""
    platform = board.make_platform()
    addr_bits, level_bits = DigitalUnitTop.prog_widths(LAYOUT)
    platform.add_resources([board.prog_resource(platform, addr_bits, level_bits),
                            board.xbar_resource(platform, addr_bits),
                            *board.extra_resources])  # fmt: skip
    plan = platform.prepare(top_of(board, unit_for(board), **kw), name="top")
    return {k: v if isinstance(v, str) else v.decode() for k, v in plan.files.items()}


def constrained_pins(files: dict[str, str], port: str) -> str:
    """The FPGA pin the constraints file gives ``port`` (PCF, LPF or XDC)."""
    for name, text in files.items():
        for pattern in (rf"set_io {port} (\S+)", rf'LOCATE COMP "{port}" SITE "(\w+)"',
                        rf'set_property LOC (\S+) \[get_ports "{port}"\]'):  # fmt: skip
            if name.endswith((".pcf", ".lpf", ".xdc")) and (found := re.search(pattern, text)):
                return found.group(1)
    raise AssertionError(f"{port} is not constrained")


@pytest.mark.parametrize("name", list(BOARDS))
def test_the_link_lands_on_the_documented_pins_of_every_board(name: str) -> None:
    board = BOARDS[name]
    files = prepared(board)
    netlist = files.get("top.il") or files["top.v"]
    assert "crossbar_driver" in netlist
    (_, _, tx), (_, _, rx) = board.xbar_pinout()
    assert constrained_pins(files, "xbar_0__tx__io") == tx
    assert constrained_pins(files, "xbar_0__rx__io") == rx


def _resource_pins(board: Board, name: str, number: int) -> set[str]:
    platform = board.platform()
    resource = platform.resources[name, number]
    pins: set[str] = set()

    def walk(ios: object) -> None:
        for pin in ios:
            if hasattr(pin, "names"):
                pins.update(pin.names)
            elif hasattr(pin, "p"):
                pins.update(pin.p.names + pin.n.names)
            else:
                walk(pin.ios)

    walk(resource.ios)
    return pins


@pytest.mark.parametrize("name", list(BOARDS))
def test_the_link_shares_no_pin_with_the_boards_other_resources(name: str) -> None:
    """Not the USB UART, the LEDs, any other resource of the platform, the board's extra pins
    or the programming header; on the iCEBreaker the link's output takes the header's prog_addr[15],
    which the UP5K's memory never reaches (refused below)."""
    board = BOARDS[name]
    link = {fpga for _, _, fpga in board.xbar_pinout()}
    assert len(link) == 2
    used: set[str] = set()  # every resource amaranth-boards declares (uart, LEDs, flash, ...)
    for res_name, number in board.platform().resources:
        used |= _resource_pins(board, res_name, number)
    for res in board.extra_resources:
        used |= {n for io in res.ios for n in io.names}
    platform = board.platform()
    header = [*board.control, *board.address]
    if name == "icebreaker":
        assert board.address[-1] in board.xbar
        header = header[:-1]
    used |= {p.fpga_pin(platform) for p in header}
    assert not link & used


def test_the_icebreaker_link_refuses_a_unit_that_needs_its_address_pin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    board = BOARDS["icebreaker"]
    with pytest.raises(ValueError, match=r"takes PMOD2-10 \(prog_addr\[15\]\).* 15 address bits"):
        board.xbar_resource(board.make_platform(), 16)
    board.xbar_resource(board.make_platform(), 15)
    out = tmp_path / "o"
    argv = ["build", "--board", "icebreaker", "--synapses", "40000", "--crossbar-tile", "8"]
    assert main([*argv, "--memory", "block", "--out", str(out)]) == 2
    assert "the crossbar link takes PMOD2-10" in capsys.readouterr().err
    # in SPRAM (the default that large) the memory refuses first: at most 32,768 synapses,
    # whose addresses never need the link's pin
    assert main([*argv, "--out", str(out)]) == 2
    assert "40000 synapses in SPRAM need 6 SPRAM" in capsys.readouterr().err
    assert not (out / "build").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--crossbar-tile", "0"], "1 .. 65535, not '0'"),
        (["--crossbar-tile", "-8"], "1 .. 65535, not '-8'"),
        (["--crossbar-tile", "65536"], "1 .. 65535, not '65536'"),
        (["--crossbar-tile", "8x8"], "an integer 1 .. 65535, not '8x8'"),
    ],
)
@pytest.mark.parametrize("command", ["build", "gateware"])
def test_bad_tiles_are_refused_before_any_tool_runs(
    command: str,
    argv: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "o"
    where = ["--board", "icebreaker", "--out", str(out)] if command == "build" else [
        "--out", str(out / "unit.v")]  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        main([command, *where, *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --crossbar-tile: the largest tile dimension" in err and message in err
    assert not out.exists()


def test_gateware_writes_the_unit_with_the_command_channel(tmp_path: Path) -> None:
    out = tmp_path / "unit.v"
    assert main(["gateware", "--out", str(out), "--synapses", "64", "--max-block", "64",
                 "--crossbar-tile", "16"]) == 0  # fmt: skip
    text = out.read_text()
    for port in ("xbar__request__valid", "xbar__request__payload", "xbar__reply__ready"):
        assert re.search(rf"\b(input|output)\b.*\b{port}\b", text), port
    assert main(["gateware", "--out", str(out), "--synapses", "64", "--max-block", "64"]) == 0
    assert "xbar__" not in out.read_text()


class LabDriver(wiring.Component):
    """A lab's driver inside the FPGA: here one that answers every request with status 3."""

    def __init__(self) -> None:
        super().__init__({"port": In(CrossbarPort.Signature())})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.d.comb += [
            self.port.request.ready.eq(1),
            self.port.reply.valid.eq(1),
            self.port.reply.payload.byte.eq(3),
            self.port.reply.payload.last.eq(1),
        ]
        return m


@pytest.mark.parametrize("name", list(BOARDS))
def test_a_labs_own_driver_takes_the_port_inside_the_fpga(name: str) -> None:
    files = prepared(BOARDS[name], driver=LabDriver())
    assert "xbar_0__tx__io" not in "".join(files.values())  # no link, no link pins used
    netlist = files.get("top.il") or files["top.v"]
    assert "crossbar_driver" in netlist


class PinnedDriver(LabDriver):
    """A lab's driver with pins of its own (a DAC's data bus, say): it requests them."""

    def elaborate(self, platform: object) -> Module:
        m = super().elaborate(platform)
        dac = platform.request("lab_dac", 0, dir="-")
        m.submodules.dac = dac_buffer = io.Buffer("o", dac)
        m.d.comb += dac_buffer.o.eq(self.port.request.payload.byte[:4])
        return m


def test_a_build_takes_a_labs_driver_and_its_pins(tmp_path: Path) -> None:
    """The Arty's build writes the Vivado project (no tool runs): the driver's pins are
    constrained, the link's are not; the report names the driver."""
    dac = Resource("lab_dac", 0, Pins("1 2 3 4", dir="o", conn=("pmod", 3)),
                   Attrs(IOSTANDARD="LVCMOS33"))  # fmt: skip
    report = build(BOARDS["arty-a7"], LAYOUT, tmp_path, crossbar_tile=TILE,
                   driver=PinnedDriver(), resources=[dac])  # fmt: skip
    assert report["xbar_driver"] == "PinnedDriver" and report["xbar_link"] is None
    xdc = (tmp_path / "build" / "metaplast.xdc").read_text()
    assert re.findall(r"set_property LOC (\S+) \[get_ports \"lab_dac_0__io", xdc) == [
        "D4", "D3", "F4", "F3"]  # fmt: skip
    assert "xbar_0" not in xdc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match="needs a unit with the crossbar port"):
            build(BOARDS["arty-a7"], LAYOUT, tmp_path, driver=LabDriver())
        gc.collect()


def test_a_driver_needs_the_port_and_the_port_signature() -> None:
    board = BOARDS["icebreaker"]
    with warnings.catch_warnings():  # the tops here are built to be looked at, not elaborated
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match="a crossbar driver needs a unit built with crossbar"):
            BoardTop(board, unit_for(board, None), driver=LabDriver())
        wrong = CrossbarLink(divisor=4, max_reply=9, timeout=1).uart_tx
        with pytest.raises(TypeError, match=r"needs a member port: In\(CrossbarPort.Signature"):
            BoardTop(board, unit_for(board), driver=wrong)
        top = BoardTop(board, unit_for(board))
        assert isinstance(top.driver, CrossbarLink)
        assert top.driver.divisor == 4 and top.driver.timeout == board.clock_hz // 2
        assert top.driver.max_reply == 1 + 13 + 255  # an XBAR_INFO of a 255-byte name
        assert BoardTop(board, unit_for(board, None)).driver is None
        del top, wrong
        gc.collect()


def test_the_board_guide_has_the_link_pins_the_code_uses() -> None:
    assert xbar_pinout_markdown() in (DOCS / "board.md").read_text()
