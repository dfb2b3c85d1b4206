"""Differential privacy for federated rounds: DP-FedAvg (dp), adaptive clipping (adaptive), the
privacy accountant (accountant), and wrapping a run's strategy from its settings (build).

Kept import-free: coordinator.settings imports privacy.settings, and build imports it back.
"""
