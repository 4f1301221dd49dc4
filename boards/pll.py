"""The boards' PLLs: the unit's clock made from the oscillator, and the settings that make it.

A lab asks for a clock in MHz; :func:`pll_settings` finds the divider settings the FPGA's PLL
needs for it (the search ``icepll`` and ``ecppll`` do), or refuses the frequency, naming the
PLL and the range it can make, before any tool runs. :class:`PLL` instantiates the primitive
and drives the ``sync`` domain from it, held in reset until the PLL has locked.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import (
    ClockSignal,
    Elaboratable,
    Instance,
    Module,
    Signal,
)
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

__all__ = ["PLL", "MAX_PLL_ERROR", "PLLSettings", "pll_settings"]

MAX_PLL_ERROR = 0.001
"""How far the frequency a PLL makes may be from the one asked for (0.1 %); the unit is told
the frequency it really gets, so INFO and the UART divisor stay exact."""


@dataclass(frozen=True)
class PLLSettings:
    """One PLL configuration: the primitive, its parameters and the frequency it makes."""

    primitive: str
    parameters: dict[str, int | str]
    input_hz: int
    output_hz: float


def _ice40(input_hz: int, want_hz: float) -> PLLSettings | None:
    """``SB_PLL40_PAD`` in SIMPLE feedback (``icepll``'s search and limits): the phase detector
    at 10-133 MHz, the VCO at 533-1066 MHz, the output the VCO over a power of two."""
    best: tuple[float, int, int, int] | None = None
    for divr in range(16):
        pfd = input_hz / (divr + 1)
        if not 10e6 <= pfd <= 133e6:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533e6 <= vco <= 1066e6:
                continue
            for divq in range(1, 7):
                out = vco / (1 << divq)
                if best is None or abs(out - want_hz) < abs(best[0] - want_hz):
                    best = (out, divr, divf, divq)
    if best is None:
        return None
    out, divr, divf, divq = best
    pfd = input_hz / (divr + 1)
    filter_range = next(
        i for i, top in enumerate((17e6, 26e6, 44e6, 66e6, 101e6, 1e12), 1) if pfd < top
    )
    return PLLSettings(
        "SB_PLL40_PAD",
        {
            "FEEDBACK_PATH": "SIMPLE",
            "DIVR": divr,
            "DIVF": divf,
            "DIVQ": divq,
            "FILTER_RANGE": filter_range,
        },
        input_hz,
        out,
    )


def _ecp5(input_hz: int, want_hz: float) -> PLLSettings | None:
    """``EHXPLLL`` with CLKOP fed back (``ecppll``'s search): the input divided to at least
    3.125 MHz, the VCO (CLKOP times its divider) at 400-800 MHz, the output up to 400 MHz."""
    best: tuple[float, int, int, int] | None = None
    for clki in range(1, 129):
        pfd = input_hz / clki
        if pfd < 3.125e6:
            break
        for clkfb in range(1, 81):
            out = pfd * clkfb
            if out > 400e6:
                break
            fits = [k for k in range(1, 129) if 400e6 <= out * k <= 800e6]
            if fits and (best is None or abs(out - want_hz) < abs(best[0] - want_hz)):
                # the VCO nearest the middle of its range, as ecppll chooses
                clkop = min(fits, key=lambda k: abs(out * k - 600e6))
                best = (out, clki, clkfb, clkop)
    if best is None:
        return None
    out, clki, clkfb, clkop = best
    return PLLSettings(
        "EHXPLLL",
        {
            "CLKI_DIV": clki,
            "CLKFB_DIV": clkfb,
            "CLKOP_DIV": clkop,
            "CLKOP_CPHASE": clkop - 1,
            "CLKOP_FPHASE": 0,
            "FEEDBK_PATH": "CLKOP",
            "CLKOP_ENABLE": "ENABLED",
        },
        input_hz,
        out,
    )


_SEARCH = {"ice40": _ice40, "ecp5": _ecp5}


def pll_settings(family: str, input_hz: int, want_hz: float) -> PLLSettings:
    """The PLL settings that make ``want_hz`` from ``input_hz`` on an FPGA ``family``.

    Raises :exc:`ValueError`, naming the PLL, when the family has no PLL here or no setting
    makes ``want_hz`` to within :data:`MAX_PLL_ERROR`: asked for a clock the board cannot make,
    a build stops before any tool runs rather than run the unit at another one.
    """
    search = _SEARCH.get(family)
    if search is None:
        raise ValueError(
            f"no PLL is known for the {family} family: the unit runs at the oscillator"
        )
    if want_hz <= 0:
        raise ValueError(f"the PLL's output must be positive, not {want_hz / 1e6:g} MHz")
    settings = search(input_hz, want_hz)
    if settings is None or abs(settings.output_hz - want_hz) > MAX_PLL_ERROR * want_hz:
        near = f"; the nearest it makes is {settings.output_hz / 1e6:.4f} MHz" if settings else ""
        prim = {"ice40": "SB_PLL40_PAD", "ecp5": "EHXPLLL"}[family]
        raise ValueError(
            f"the {prim} PLL cannot make {want_hz / 1e6:g} MHz from the {input_hz / 1e6:g} MHz "
            f"oscillator to within {MAX_PLL_ERROR:.1%}{near}"
        )
    return settings


class PLL(Elaboratable):
    """The ``sync`` clock domain from the oscillator pin ``clock`` through a PLL.

    The domain is held in reset until the PLL reports lock, so the unit never runs on the
    PLL's settling clock, and leaves it on the clock's edge (:class:`ResetSynchronizer`).

    Parameters
    ----------
    settings : PLLSettings
        What :func:`pll_settings` found.
    clock : str
        The platform's oscillator resource.

    nextpnr derives the output's timing constraint from the oscillator's through the PLL's
    settings, so a build asks for margin by constraining the oscillator above its frequency.
    """

    def __init__(self, settings: PLLSettings, clock: str) -> None:
        self.settings = settings
        self.clock = clock

    def elaborate(self, platform: object) -> Module:
        m = Module()
        pin = platform.request(self.clock, 0, dir="-")
        params = {f"p_{k}": v for k, v in self.settings.parameters.items()}
        locked = Signal()
        clk = Signal()
        m.d.comb += ClockSignal("sync").eq(clk)
        if self.settings.primitive == "SB_PLL40_PAD":
            # the PLL takes the pad itself, not the output of an input buffer
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                i_PACKAGEPIN=pin.io,
                i_RESETB=1,
                i_BYPASS=0,
                o_PLLOUTGLOBAL=clk,
                o_LOCK=locked,
                **params,
            )
        else:
            m.submodules.clk_buf = clk_buf = io.Buffer("i", pin)
            m.submodules.pll = Instance(
                "EHXPLLL",
                i_CLKI=clk_buf.i,
                i_CLKFB=clk,
                i_RST=0,
                i_STDBY=0,
                i_PHASESEL0=0,
                i_PHASESEL1=0,
                i_PHASEDIR=1,
                i_PHASESTEP=1,
                i_PHASELOADREG=1,
                i_PLLWAKESYNC=0,
                i_ENCLKOP=0,
                o_CLKOP=clk,
                o_LOCK=locked,
                a_FREQUENCY_PIN_CLKI=f"{self.settings.input_hz / 1e6:g}",
                a_FREQUENCY_PIN_CLKOP=f"{self.settings.output_hz / 1e6:g}",
                **params,
            )
        # LOCK is asynchronous to the clock: its release reaches the domain through two
        # registers. As a plain reset it met the flip-flops at different times, and icetime
        # timed it as a path from LOCK through the fabric (20.7 ns of 20.8 at 48 MHz)
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")
        return m
