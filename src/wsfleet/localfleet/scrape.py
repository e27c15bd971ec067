"""Read a gateway's live numbers straight from its admin port.

The scale target picks the emptiest gateway from these, not from Prometheus:
at scale-down time the freshest count is the one that matters.
"""

from __future__ import annotations

import math

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

CONNECTIONS_METRIC = "wsfleet_connections"


def sum_metric(text: str, name: str) -> float | None:
    """The sum of every sample of gauge/counter `name` in exposition `text`.

    None when the metric is absent. Counters are matched with or without
    their ``_total`` suffix.
    """
    total: float | None = None
    for family in text_string_to_metric_families(text):
        if family.name not in (name, name.removesuffix("_total")):
            continue
        for sample in family.samples:
            if sample.name in (name, f"{name}_total") and not math.isnan(sample.value):
                total = (total or 0.0) + float(sample.value)
    return total


async def fetch_metric(
    session: aiohttp.ClientSession, base_url: str, name: str, timeout_s: float = 5.0
) -> float | None:
    """`sum_metric` of ``base_url/metrics``; None when unreachable or absent."""
    try:
        async with session.get(
            f"{base_url}/metrics", timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as resp:
            if resp.status != 200:
                return None
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None
    return sum_metric(text, name)


async def probe(session: aiohttp.ClientSession, url: str, timeout_s: float = 2.0) -> bool:
    """True when GET `url` answers 200."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False
