"""The meta-function LUT: ``M(W_H)`` sampled over half an interval, loadable at run time."""

from __future__ import annotations

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from metaplast.contract import Contract
from metaplast.protocol import lut_crc, mstar_code

__all__ = ["LoadSignature", "MetaLUT"]


def LoadSignature(contract: Contract) -> wiring.Signature:  # noqa: N802
    """Loading a table (from the loader's side): entries one by one, then the identity.

    ``commit`` latches ``mstar`` and ``crc`` as the LUT's identity; the loader computes the CRC
    from the bytes it wrote, so INFO reports what the unit really holds.
    """
    return wiring.Signature(
        {
            "index": Out(range(contract.lut_entries)),
            "value": Out(contract.meta_bits + 1),
            "en": Out(1),
            "commit": Out(1),
            "mstar": Out(16),
            "crc": Out(16),
        }
    )


class MetaLUT(wiring.Component):
    """``lut_entries`` words of ``meta_bits + 1`` bits, with the identity of what they hold.

    It powers up holding the table of ``init_mstar`` (``m* = 0``: M = 1 everywhere, plain
    quantized SGD, as a session's pre-training wants).
    """

    def __init__(self, contract: Contract, *, init_mstar: float = 0.0) -> None:
        self.contract = contract
        self.init_table = contract.meta_lut(init_mstar)
        self.init_mstar = mstar_code(init_mstar)
        self.init_crc = lut_crc(self.init_table)
        super().__init__(
            {
                "index": In(range(contract.lut_entries)),
                "index_en": In(1, init=1),
                "value": Out(contract.meta_bits + 1),
                "load": In(LoadSignature(contract)),
                "mstar": Out(16, init=self.init_mstar),
                "crc": Out(16, init=self.init_crc),
            }
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.table = table = Memory(
            shape=self.contract.meta_bits + 1,
            depth=self.contract.lut_entries,
            init=self.init_table,
        )
        wr = table.write_port()
        rd = table.read_port()
        m.d.comb += [
            rd.addr.eq(self.index),
            rd.en.eq(self.index_en),
            self.value.eq(rd.data),
            wr.addr.eq(self.load.index),
            wr.data.eq(self.load.value),
            wr.en.eq(self.load.en),
        ]
        with m.If(self.load.commit):
            m.d.sync += [self.mstar.eq(self.load.mstar), self.crc.eq(self.load.crc)]
        return m
