"""The converters between a crossbar and the digital side: what drives its rows or columns and
what reads its conductances and currents, as configuration.

``ideal`` is float all the way: inputs, conductances and the product (the in-process model's
default, which every earlier result used). ``board`` is the converters of the unit's crossbar
port (``docs/protocol.md``): every input vector leaves the host as 16-bit codes under a
power-of-two scale of its own (a DAC whose full scale follows the vector, as analog in-memory
accelerators manage their inputs), every conductance is read as a whole number of ``G_LSB``,
and the product of the two is then a sum of integers, exact in any order and on any machine.
So a layer computed on a board's array, tile by tile, and the same layer computed in process
end bit for bit alike; the host alone turns the integer currents back into floats.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from metaplast.vocabulary import PERIPHERIES

INPUT_BITS = 16
"""Bits of an input code, sign included."""
G_LSB = 2.0**-30
"""Siemens per conductance code (about 0.93 nS)."""
EXACT_BITS = 53
"""The integer currents stay below ``2**EXACT_BITS`` (float64 sums them exactly)."""


@dataclass(frozen=True)
class Periphery:
    """How a crossbar's inputs, reads and products are converted (:data:`PERIPHERIES`)."""

    name: str = "ideal"

    def __post_init__(self) -> None:
        if self.name not in PERIPHERIES:
            raise ValueError(f"periphery must be one of {PERIPHERIES}, got {self.name!r}")

    @property
    def exact(self) -> bool:
        return self.name == "board"

    def read(self, g: Tensor) -> Tensor:
        """Conductances ``g`` (S) as a read of these converters reports them."""
        return (conductance_codes(g) * G_LSB).to(torch.float32) if self.exact else g

    def mvm(self, v: Tensor, g: Tensor) -> Tensor:
        """``v @ g`` (``batch x n`` inputs, ``n x m`` conductances) as these converters
        compute it: the currents, float32."""
        return product(v, conductance_codes(g)) if self.exact else v @ g


def product(v: Tensor, g_codes: Tensor) -> Tensor:
    """The ``board`` converters' ``v @ g`` from the conductances' codes: every input vector as
    codes, one exact integer product, the currents (A, float32)."""
    codes, exponents = input_codes(v)
    if v.shape[-1] * 2.0 ** (INPUT_BITS - 1) * float(g_codes.max()) >= 2.0**EXACT_BITS:
        raise OverflowError(f"{v.shape[-1]} inputs: the integer currents could reach 2**53")
    return currents(codes @ g_codes, exponents)


def input_codes(v: Tensor) -> tuple[Tensor, Tensor]:
    """Each row of ``v`` as integer codes (float64) and the exponent ``e`` of its scale:
    ``v ~ code * 2**(e - 15)``, ``|code| <= 2**15 - 1``, ``e`` the smallest with
    ``max |v| < 2**e`` (0 for a zero row)."""
    v = v.to(torch.float64)
    _, e = torch.frexp(v.abs().amax(dim=-1, keepdim=True))
    limit = 2 ** (INPUT_BITS - 1) - 1
    codes = torch.round(torch.ldexp(v, INPUT_BITS - 1 - e)).clamp(-limit, limit)
    return codes, e.squeeze(-1)


def conductance_codes(g: Tensor) -> Tensor:
    """Conductances (S) as whole numbers of :data:`G_LSB` (float64)."""
    return torch.round(g.to(torch.float64) / G_LSB)


def currents(codes: Tensor, exponents: Tensor) -> Tensor:
    """Integer currents (``batch x m``, in ``G_LSB`` times input codes) of inputs scaled by
    ``2**(e - 15)``, as amperes (float32): one rounding, the last."""
    lsb = torch.full(exponents.shape, G_LSB, dtype=torch.float64)
    scale = torch.ldexp(lsb, exponents - (INPUT_BITS - 1))
    return (codes * scale[..., None]).to(torch.float32)
