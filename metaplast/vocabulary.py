"""The names and default sizes that the configuration, the models and the command line share.

This module imports nothing, so that the command line can offer every choice and default
without loading torch or amaranth; each name's owner (the contract, the device models, the
network, the unit's layout) takes its list from here.
"""

ROUNDINGS: tuple[str, ...] = ("nearest", "stochastic")
"""How an update is rounded to the hidden weight's LSB (the contract's ``rounding``)."""

DEVICE_MODELS: tuple[str, ...] = ("hfox-1t1r", "tio2-passive")
"""The device models a crossbar can be made of (their files are in ``device_data/``)."""

CROSSBARS: tuple[str, ...] = ("ideal", *DEVICE_MODELS, "board")
"""Where a session's quantized weights live: exactly, on a device model's crossbar in process,
or on the array behind a board's crossbar port (``--port``)."""

PERIPHERIES: tuple[str, ...] = ("ideal", "board")
"""A crossbar's converters: float throughout, or the board's crossbar port's (exact integer
MVMs of 16-bit input codes and conductance codes, ``firmware_sim/crossbar/periphery.py``)."""

ARITHMETICS: tuple[str, ...] = ("float", "fixed")
INPUTS: tuple[str, ...] = ("signed", "unsigned")
BN_MODES: tuple[str, ...] = ("per-task", "shared")
BN_STATS: tuple[str, ...] = ("batch", "running")

UNIT_SYNAPSES = 8192
"""Hidden-weight memory depth of a unit built or simulated without ``--synapses``."""
UNIT_MAX_BLOCK = 256
"""Synapses per block command."""
UNIT_COUNTER_WIDTH = 16
"""Bits of each change counter."""
UNIT_PROG_DEPTH = 2
"""Operations the programming port queues: the events queue before it, in the core's FIFO
(block RAM already); a deeper FIFO here took two of the iCE40's 30 block RAMs, which its
largest unit needs."""
UNIT_CLOCK_HZ = 48_000_000
"""The clock INFO reports for a unit not built for a board's oscillator."""
UNIT_MEMORIES: tuple[str, ...] = ("auto", "block", "spram")
"""Where a board build keeps the hidden weights and change counters: dual-port block RAM (one
update per clock), single-port SPRAM (the iCE40 UP's; one update per two cycles), or auto
(SPRAM on a board that has it when the synapses exceed what its block RAM holds)."""
BUILD_SEED = 1
"""nextpnr's first placer seed in a board build: the same design and seed give the same
bitstream and Fmax."""

BUILD_SEEDS = 8
"""How many placer seeds a board build tries, from :data:`BUILD_SEED` on, until one meets the
target. Placements of one netlist differ by about 10 % in Fmax (the iCEBreaker's
1,024-synapse unit at 48 MHz: 44.5 to 50.7 MHz over seeds 1-8, four of them meeting it,
``docs/results.md`` section 11), so a design a few percent short of its clock is worth a few
more; synthesis runs once."""

BUILD_MARGIN = 3.0
"""How far above its target, in percent, a board build's seed sweep looks for a placement
before it keeps the fastest that meets the target: a placement that just meets it works on
nextpnr's and icetime's models, with nothing to spare for a warm board or a slow part."""

UNIT_BAUD = 3_000_000
"""The UART rate of a board that is not told another (an FT2232H makes it exactly)."""
PROBE_BAUDS: tuple[int, ...] = (UNIT_BAUD, 12_000_000, 1_000_000, 2_000_000, 4_000_000, 115_200)
"""The rates a host not told the board's tries, in this order, until INFO answers: every
board's rate at its oscillator and with its PLL, the FT2232H's fastest, and a classic one."""
UNIT_MAX_TILE = 0xFFFF
"""The largest tile dimension a unit's crossbar port serves (XBAR_INFO's u16 tile fields)."""
