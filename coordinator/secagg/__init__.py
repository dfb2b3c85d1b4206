"""The coordinator's side of secure aggregation: one round's state machine (coordinator.secagg.round)."""

from fedmq.coordinator.secagg.round import SecAggRound as SecAggRound
