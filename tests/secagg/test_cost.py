"""The wire cost figures: measured message sizes, and their relation to the plain update."""

from __future__ import annotations

from fedmq.coordinator.secagg.cost import main, wire_cost
from fedmq.protocol.secagg import messages as m
from fedmq.protocol.secagg.params import SecAggParams


def test_the_masked_input_costs_r_bits_per_parameter_plus_framing() -> None:
    # Given 4 workers and 10,000 parameters (R = 16 + bit length of 4 * 65536 = 35 bits)
    params = SecAggParams(num_workers=4, threshold=3, neighbours=3)
    cost = wire_cost(num_params=10_000, params=params)
    # Then the masked input is 35 planes of ceil(10,001 / 8) bytes, plus under 200 bytes of framing
    assert 0 <= cost.up[m.Stage.MASKED_INPUT] - 35 * 1251 < 200
    # And the share reply is the 3 sealed pairs, plus framing
    assert 0 <= cost.up[m.Stage.SHARE] - 3 * m.SEALED_BYTES < 100
    # And the plain update is 40,000 bytes of float32 plus framing
    assert 0 <= cost.plain_update - 40_000 < 300
    assert 35 / 32 < cost.vs_plain < 35 / 32 + 0.05


def test_the_cost_script_prints_its_table(capsys) -> None:  # type: ignore[no-untyped-def]
    main(["--params", "1000", "--workers", "5"])
    out = capsys.readouterr().out
    assert "MASKED_INPUT" in out and "per worker per round" in out and "1.73x" in out
