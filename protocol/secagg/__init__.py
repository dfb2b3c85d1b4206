"""Secure aggregation (SecAgg+, Bell et al. 2020; Bonawitz et al. 2017 on the complete graph):
the pure cryptography and math, with no broker. The worker's side is worker.secagg, the
coordinator's coordinator.secagg."""
