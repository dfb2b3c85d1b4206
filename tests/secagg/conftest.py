"""Fixtures the secure-aggregation tests share with tests/coordinator: worker processes on a real broker."""

from tests.coordinator.conftest import start_workers  # noqa: F401 - a fixture, used by name
