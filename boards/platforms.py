"""The lab boards the digital unit is built for, and where its pins go on each.

Every board is an amaranth-boards platform plus what the unit needs from it: the oscillator,
the UART rate its USB-serial chip and that clock agree on, the header that carries the
programming port (:data:`PROG_CONTROL` then the address bits, always on the same pins whatever
the synapse count, so a cable made once keeps working), two LEDs, and the toolchain that
finishes the bitstream. ``docs/bench.md``'s pin-out tables are generated from :data:`BOARDS`
(``metaplast.boards.pinout``); nothing here is copied there by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from amaranth.build import Attrs, Clock, Pins, PinsN, Platform, Resource, Subsignal
from amaranth_boards.arty_a7 import ArtyA7_35Platform
from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from metaplast.gateware.uart import MIN_DIVISOR

__all__ = [
    "BOARDS",
    "LEVEL_PINS",
    "PROG_CONTROL",
    "XBAR_LINK",
    "Board",
    "HeaderPin",
    "board_named",
]

LEVEL_PINS = 4
"""Header pins reserved for ``prog_level``: up to 16 device levels (17 weight levels use 9)."""

PROG_CONTROL: tuple[str, ...] = (
    "prog_strobe",
    "prog_busy_n",
    "prog_device",
    *(f"prog_level[{i}]" for i in range(LEVEL_PINS)),
)
"""The programming port's control pins, in the order a board's ``control`` header lists them.

``prog_busy_n`` is the unit's ``prog_busy`` inverted, with the FPGA's pull-up: a header with
nothing attached reads "not busy", and a programming circuit pulls it low while it works.
"""

XBAR_LINK: tuple[str, ...] = ("xbar_tx", "xbar_rx")
"""The crossbar link's pins (:class:`~metaplast.gateware.crossbar_link.CrossbarLink`), in the
order a board's ``xbar`` lists them: the unit's serial output to the array's driver, and the
driver's serial output to the unit (with the FPGA's pull-up: idle high when unwired)."""


@dataclass(frozen=True)
class HeaderPin:
    """One pin of a board connector: amaranth-boards' ``(name, number, pin)`` and its silkscreen."""

    connector: str
    number: int
    pin: str
    label: str

    def fpga_pin(self, platform: Platform) -> str:
        """The FPGA ball or pin this header pin is wired to, from the platform's connector."""
        return platform.connectors[self.connector, self.number].mapping[self.pin]


# the UP's delays for ABC's LUT mapping (by default the HX's: 99 paths of a 1,024-synapse unit
# over 17 ns, estimated by experiments/logic_depth.py, where there are 42), and a route's
# delay of 3 ns in place of the 750 ps synth_ice40 gives it: a route between two LUTs costs
# the UP5K 1.8 to 4 ns, and at 750 ps ABC traded LUT levels for area (11 paths over 17 ns).
# synth_ice40 stops before its own mapping, these commands are its `map_luts` with that delay
_UP5K_SYNTH = "-dsp -device u"
_UP5K_MAP_LUTS = f"""check -latchonly -assert
techmap -map +/ice40/latches_map.v
read_verilog -D ICE40_U -icells -lib -specify +/ice40/abc9_model.v
abc9 -W 3000
ice40_wrapcarry -unwrap
techmap -map +/ice40/ff_map.v
clean
opt_lut -tech ice40
synth_ice40 {_UP5K_SYNTH} -run map_cells:"""


def _pmod(number: int, label: str) -> tuple[HeaderPin, ...]:
    """The eight signal pins of a 12-pin PMOD (5, 6, 11 and 12 are ground and 3.3 V)."""
    return tuple(HeaderPin("pmod", number, p, f"{label}-{p}") for p in "1 2 3 4 7 8 9 10".split())


def _ulx3s(side: str, numbers: range) -> tuple[HeaderPin, ...]:
    """ULX3S J1/J2 pins ``GP<n>`` (amaranth-boards ``gpio`` ``n+``) or ``GN<n>`` (``n-``)."""
    sign = "+" if side == "GP" else "-"
    return tuple(HeaderPin("gpio", 0, f"{n}{sign}", f"{side}{n}") for n in numbers)


@dataclass(frozen=True)
class Board:
    """A board the unit is built for: the platform and everything the build needs to know."""

    name: str
    title: str
    platform: type[Platform]
    family: str
    """``ice40``, ``ecp5`` (open toolchain) or ``xilinx`` (Vivado)."""
    bauds: tuple[int, ...]
    """The rates the USB-serial chip makes exactly, fastest first (:meth:`baud_at` picks)."""
    usb_serial: str
    control: tuple[HeaderPin, ...]
    """Header pins of :data:`PROG_CONTROL`, in that order."""
    address: tuple[HeaderPin, ...]
    """Header pins of ``prog_addr[0]``, ``prog_addr[1]``, ...: the largest address it carries."""
    io_attrs: dict[str, Any]
    pullup_attrs: dict[str, Any]
    heartbeat_led: int
    activity_led: int
    xbar: tuple[HeaderPin, ...]
    """Header pins of :data:`XBAR_LINK`, in that order: free of every other resource, unless a
    programming-header address pin the board's memory can never reach (then the link refuses
    a unit whose addresses need it)."""
    programmer: str
    """The command that loads a bitstream onto the board, the file name to follow."""
    bitstream_suffix: str
    synth_opts: str = ""
    """Extra ``synth_*`` options (``-dsp`` maps the UP5K's multipliers to its DSP blocks)."""
    synth_after: str = ""
    """Yosys commands that finish the synthesis where ``synth_opts`` stopped it (``-run``)."""
    extra_resources: tuple[Resource, ...] = field(default=())
    """Board pins that must be driven for the board to behave (driven high by the top level)."""
    spram: int = 0
    """Single-port RAMs of 16,384 x 16 bit (the iCE40 UP's ``SB_SPRAM256KA``) the FPGA has."""
    block_ram_synapses: int = 0
    """The largest unit its block RAM holds (default contract, ``--max-block 256``; measured
    by ``bench/board_builds.py``, results section 11): ``--memory auto`` takes the SPRAM above
    it."""

    @property
    def clock(self) -> str:
        """The oscillator's resource: the platform's ``default_clk``."""
        return self.platform.default_clk

    @property
    def clock_hz(self) -> int:
        """The oscillator's frequency, as amaranth-boards declares it."""
        return int(self.platform().default_clk_frequency)

    @property
    def baud(self) -> int:
        """The unit's rate at the oscillator."""
        return self.baud_at(self.clock_hz)

    def baud_at(self, clock_hz: int) -> int:
        """The fastest rate the USB-serial chip makes exactly that ``clock_hz`` divides exactly
        in at least :data:`~metaplast.gateware.uart.MIN_DIVISOR` cycles a bit (no error on
        the unit's side: a host's own error keeps the whole margin)."""
        for baud in self.bauds:
            if clock_hz % baud == 0 and clock_hz // baud >= MIN_DIVISOR:
                return baud
        raise ValueError(
            f"{self.name}: no rate the {self.usb_serial} makes exactly "
            f"({', '.join(map(str, self.bauds))}) divides {clock_hz} Hz exactly; give --baud"
        )

    @property
    def open_toolchain(self) -> bool:
        return self.family in ("ice40", "ecp5")

    @property
    def max_addr_bits(self) -> int:
        return len(self.address)

    def make_platform(self, target_hz: float | None = None) -> Platform:
        """A fresh platform; its oscillator constrained to ``target_hz`` when given.

        Asking the router for more than the oscillator gives is how a lab buys margin (PVT,
        a later PLL); the unit still runs at, and INFO still reports, :attr:`clock_hz`.
        """
        platform = self.platform()
        if target_hz is not None:
            res = platform.resources[self.clock, 0]
            platform.resources[self.clock, 0] = Resource(
                res.name, res.number, *res.ios, Clock(target_hz), res.attrs
            )
        return platform

    def prog_resource(self, platform: Platform, addr_bits: int, level_bits: int) -> Resource:
        """The programming port as a ``prog`` resource on this board's header."""
        if addr_bits > self.max_addr_bits:
            raise ValueError(
                f"{self.name}: the programming header carries {self.max_addr_bits} address bits "
                f"(up to {1 << self.max_addr_bits} synapses); this unit needs {addr_bits}"
            )
        if level_bits > LEVEL_PINS:
            raise ValueError(
                f"{self.name}: the programming header carries {LEVEL_PINS} level bits; "
                f"this contract's device levels need {level_bits}"
            )

        def pins(header: tuple[HeaderPin, ...]) -> str:
            return " ".join(p.fpga_pin(platform) for p in header)

        strobe, busy_n, device, *level = self.control
        return Resource(
            "prog",
            0,
            Subsignal("addr", Pins(pins(self.address[:addr_bits]), dir="o")),
            Subsignal("level", Pins(pins(tuple(level[:level_bits])), dir="o")),
            Subsignal("device", Pins(pins((device,)), dir="o")),
            Subsignal("strobe", Pins(pins((strobe,)), dir="o")),
            Subsignal("busy", PinsN(pins((busy_n,)), dir="i"), Attrs(**self.pullup_attrs)),
            Attrs(**self.io_attrs),
        )

    def xbar_resource(self, platform: Platform, addr_bits: int) -> Resource:
        """The crossbar link as an ``xbar`` resource (``tx``, ``rx``) on this board's pins."""
        shared = [p for p in self.xbar if p in self.address[:addr_bits]]
        if shared:
            bits = self.address.index(shared[0])
            raise ValueError(
                f"{self.name}: the crossbar link takes {shared[0].label} "
                f"(prog_addr[{bits}]); a unit with the link carries {bits} address bits "
                f"(up to {1 << bits} synapses), this one needs {addr_bits}"
            )
        tx, rx = (p.fpga_pin(platform) for p in self.xbar)
        return Resource(
            "xbar",
            0,
            Subsignal("tx", Pins(tx, dir="o")),
            Subsignal("rx", Pins(rx, dir="i"), Attrs(**self.pullup_attrs)),
            Attrs(**self.io_attrs),
        )

    def xbar_pinout(self) -> list[tuple[str, str, str]]:
        """``(signal, header pin, FPGA pin)`` of the crossbar link's pins."""
        platform = self.platform()
        return [
            (s, p.label, p.fpga_pin(platform)) for s, p in zip(XBAR_LINK, self.xbar, strict=True)
        ]

    def pinout(self) -> list[tuple[str, str, str]]:
        """``(signal, header pin, FPGA pin)`` for every programming-port pin of the header."""
        platform = self.platform()
        signals = [*PROG_CONTROL, *(f"prog_addr[{i}]" for i in range(self.max_addr_bits))]
        header = [*self.control, *self.address]
        return [(s, p.label, p.fpga_pin(platform)) for s, p in zip(signals, header, strict=True)]


_LVCMOS33_ECP5 = {"IO_TYPE": "LVCMOS33"}

FT2232H_BAUDS = (12_000_000, 8_000_000, 6_000_000, 4_000_000, 3_000_000, 2_000_000, 1_000_000)
"""Rates the FT2232H makes exactly: 12 MHz / n for n = 1, 1.5, 2, 3, 4, 6, 12."""
FT231X_BAUDS = (3_000_000, 2_000_000, 1_500_000, 1_000_000)
"""Rates the FT231X makes exactly: 3 MHz / n for n = 1, 1.5, 2, 3."""

BOARDS: dict[str, Board] = {
    b.name: b
    for b in (
        Board(
            name="icebreaker",
            title="1BitSquared iCEBreaker (iCE40UP5K-SG48)",
            platform=ICEBreakerPlatform,
            family="ice40",
            bauds=FT2232H_BAUDS,  # 3 Mbaud at 12 MHz, 12 Mbaud at 48 MHz
            usb_serial="FTDI FT2232H, channel B (channel A programs the flash)",
            # PMOD2 carries the snap-off LEDs and buttons: keep prog_busy_n (an input) off it
            control=_pmod(0, "PMOD1A")[:7],
            address=_pmod(1, "PMOD1B") + _pmod(2, "PMOD2"),
            # the one free PMOD pin takes the input; the output takes prog_addr[15], which the
            # UP5K's block RAM never reaches (2,304 synapses at most, 12 address bits)
            xbar=(_pmod(2, "PMOD2")[7], _pmod(0, "PMOD1A")[7]),
            io_attrs={"IO_STANDARD": "SB_LVCMOS"},
            pullup_attrs={"PULLUP": 1},
            heartbeat_led=1,  # green
            activity_led=0,  # red
            programmer="iceprog",
            bitstream_suffix="bin",
            synth_opts=f"{_UP5K_SYNTH} -run begin:map_luts",
            synth_after=_UP5K_MAP_LUTS,
            spram=4,
            block_ram_synapses=2304,
        ),
        Board(
            name="ulx3s-85f",
            title="Radiona ULX3S with an ECP5 LFE5U-85F (CABGA381)",
            platform=ULX3S_85F_Platform,
            family="ecp5",
            bauds=FT231X_BAUDS,  # 1 Mbaud at 25 MHz, 2 Mbaud at 100 MHz
            usb_serial="FTDI FT231X on the US1 USB port",
            control=_ulx3s("GP", range(0, 7)),
            address=_ulx3s("GN", range(0, 14)) + _ulx3s("GP", range(7, 14)),
            xbar=_ulx3s("GP", range(14, 15)) + _ulx3s("GN", range(14, 15)),
            io_attrs=_LVCMOS33_ECP5,
            pullup_attrs={"PULLMODE": "UP"},
            heartbeat_led=0,
            activity_led=1,
            programmer="openFPGALoader -b ulx3s",
            bitstream_suffix="bit",
            # the ESP32 resets the FPGA through GPIO0 unless it is held high
            extra_resources=(
                Resource("wifi_gpio0", 0, Pins("L2", dir="o"), Attrs(**_LVCMOS33_ECP5)),
            ),
        ),
        Board(
            name="arty-a7",
            title="Digilent Arty A7-35T (XC7A35T, needs Vivado)",
            platform=ArtyA7_35Platform,
            family="xilinx",
            bauds=FT2232H_BAUDS,  # 4 Mbaud at 100 MHz
            usb_serial="FTDI FT2232H, channel B (channel A is JTAG)",
            control=_pmod(2, "JC")[:7],
            address=_pmod(0, "JA") + _pmod(1, "JB"),
            # JD-2 and JD-3: TXD and RXD of Digilent's UART PMOD type (interface type 3)
            xbar=(_pmod(3, "JD")[1], _pmod(3, "JD")[2]),
            io_attrs={"IOSTANDARD": "LVCMOS33"},
            pullup_attrs={"PULLUP": "TRUE"},
            heartbeat_led=0,
            activity_led=1,
            programmer="openFPGALoader -b arty_a7_35t",
            bitstream_suffix="bit",
        ),
    )
}


def board_named(name: str) -> Board:
    """The board called ``name``; :exc:`KeyError` with the known names otherwise."""
    try:
        return BOARDS[name]
    except KeyError:
        raise KeyError(f"unknown board {name!r}; known: {', '.join(BOARDS)}") from None
