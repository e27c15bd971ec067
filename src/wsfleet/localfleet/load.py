"""`wsfleet up --load NAME`: drive the load tool's scenario against the fleet, in-process."""

from __future__ import annotations

from collections.abc import Callable


class LoadUnavailableError(RuntimeError):
    """The load tool or the named scenario is not available."""


def check_load(name: str) -> None:
    """Raise `LoadUnavailableError` unless scenario `name` can run."""
    raise LoadUnavailableError(f"load scenario {name!r}: the load tool is not available yet")


async def run_load(name: str, url: str, say: Callable[[str], None]) -> None:
    """Run scenario `name` against `url` until it ends or is cancelled."""
    check_load(name)
