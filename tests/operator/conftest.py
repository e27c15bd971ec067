"""Fixtures of the operator tests."""

from tests.support.prewarm_gateway import gateway  # noqa: F401 (a fixture)
