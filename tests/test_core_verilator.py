"""The learning core's Verilog under Verilator against the model: the fast path of the
bit-exactness campaign (``experiments/bit_exactness.py --simulator verilator``) kept honest.

The 12-bit contract with 7 unequal levels is the configuration that Verilator 5.006's
data-flow optimiser got wrong (``-fno-dfg`` in ``firmware_sim/board/verilator.py``); a few
thousand adversarial updates show it at once if the flags or the harness regress.
"""

from __future__ import annotations

import random

import pytest
from core_check import CONTRACTS, Scenario, adversarial_hidden, adversarial_updates, expected
from core_verilator import run_scenario
from test_verilog_board import needs_verilator


@needs_verilator
@pytest.mark.parametrize("single_port", [False, True], ids=["dual-port", "single-port"])
def test_verilated_core_matches_the_model_on_the_uneven_contract(single_port: bool) -> None:
    contract = CONTRACTS["uneven-12bit"]
    rng = random.Random(5)
    hidden = adversarial_hidden(contract, 40, rng)
    updates = adversarial_updates(contract, hidden, 4000, rng)
    s = Scenario(contract, 40, hidden, updates, ready_prob=0.7, seed=5, single_port=single_port)
    run_scenario(s)
    events, final, counts = expected(s)
    assert len(events) > 1000
    assert s.events == events
    assert (s.final, s.counts) == (final, counts)
    assert s.cycles >= len(updates)
