"""The configuration shared by the pytest runner and the cocotb testbench.

The runner builds the Verilog for a :class:`TbConfig` and hands the same configuration to the
testbench through environment variables (the testbench runs inside the simulator, in another
process), so both sides build the same :class:`~metaplast.protocol.Layout`. This module does
not import cocotb: the runner imports it outside any simulator.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from core_check import CONTRACTS

from metaplast.protocol import Layout

_PREFIX = "METAPLAST_"


@dataclass(frozen=True)
class TbConfig:
    """One design under test and how hard the testbench drives it.

    ``write_blocks`` limits the WRITE_HIDDEN / read-back blocks of the session (``0``: every
    block); with a limit, the session writes the first and the last blocks, so the highest
    addresses are exercised whatever the limit.
    """

    name: str
    synapses: int
    max_block: int
    contract: str = "default"
    counter_width: int = 16
    divisor: int = 4
    seed: int = 1
    update_blocks: int = 40
    write_blocks: int = 0
    prog_busy: int = 5
    """Cycles the modelled programming circuit stays busy after a strobe (slow-circuit tests)."""
    block: int = 0
    """Block length of the error and retry scenarios (``0``: ``max_block``); shorter blocks
    keep a large unit's simulation short. Frames at and just above ``max_block`` are sent
    whatever this is."""

    @property
    def test_block(self) -> int:
        return min(self.block or self.max_block, self.max_block, self.synapses)

    @property
    def layout(self) -> Layout:
        return Layout(
            CONTRACTS[self.contract],
            self.synapses,
            max_block=self.max_block,
            counter_width=self.counter_width,
        )

    def env(self) -> dict[str, str]:
        """The environment variables that carry this configuration to the testbench."""
        return {
            f"{_PREFIX}{field.upper()}": str(getattr(self, field))
            for field in self.__dataclass_fields__
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> TbConfig:
        """The configuration the runner set (defaults: the tiny unit)."""
        values: dict[str, object] = {}
        for field, spec in cls.__dataclass_fields__.items():
            raw = environ.get(f"{_PREFIX}{field.upper()}")
            if raw is not None:
                values[field] = raw if spec.type == "str" else int(raw)
        values.setdefault("name", "tiny")
        values.setdefault("synapses", 48)
        values.setdefault("max_block", 16)
        return cls(**values)  # type: ignore[arg-type]


TINY = TbConfig("tiny", synapses=48, max_block=16, update_blocks=48)
TILE = TbConfig(
    "tile",
    synapses=8192,
    max_block=256,
    update_blocks=10,
    write_blocks=3,
    block=32,
    seed=2,
)
UNEVEN = TbConfig(
    "uneven-12bit",
    synapses=20,
    max_block=8,
    contract="uneven-12bit",
    counter_width=4,
    update_blocks=48,
    seed=3,
)
CONFIGS: tuple[TbConfig, ...] = (TINY, TILE, UNEVEN)
