"""Who a connection is and what it may do: the `Principal` and its checks.

Authentication (turning an upgrade request into a `Principal`) is pluggable:
an `Authenticator` is any callable ``(path, headers) -> Principal`` that raises
`Unauthorized` to refuse the connection (close 4001). The default one lets
everybody in as `ANONYMOUS` (every channel allowed). A JWT authenticator lives
in its own module and plugs into `Gateway(authenticator=...)`.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from wsfleet_gateway.protocol import is_server_only


class Unauthorized(Exception):
    """The connection is refused (WebSocket close 4001)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated (or anonymous) user of one connection.

    `channels`: glob patterns (``fnmatch``, case-sensitive) of the channels the
    user may subscribe and publish to. `tier`: the plan name quotas key on.
    `max_channels`: channels one connection may hold at once (the tier quota);
    None uses ``settings.max_channels_per_connection``.
    """

    user: str
    tier: str = "anonymous"
    channels: tuple[str, ...] = ("*",)
    max_channels: int | None = None

    def may_join(self, channel: str) -> bool:
        """May subscribe to `channel`."""
        return channel_matcher(self.channels)(channel) is not None

    def may_publish(self, channel: str) -> bool:
        """May publish to `channel` (never to server-only ``$`` channels)."""
        return not is_server_only(channel) and self.may_join(channel)


@functools.lru_cache(maxsize=4096)
def channel_matcher(patterns: tuple[str, ...]) -> Callable[[str], object]:
    """One compiled regex for a principal's glob patterns (`fnmatchcase` semantics);
    principals of one token shape share it."""
    if not patterns:
        return lambda channel: None  # no pattern: no channel
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)).match


ANONYMOUS = Principal(user="anonymous")

Authenticator = Callable[[str, Mapping[str, str]], Principal]
"""``(request path with query, headers) -> Principal``; raises `Unauthorized`."""


def allow_anonymous(path: str, headers: Mapping[str, str]) -> Principal:
    """The default authenticator: everyone is `ANONYMOUS`."""
    return ANONYMOUS
