"""The dashboard's small Prometheus HTTP API client (instant and range queries).

Two failure kinds, because the page shows them differently:

- `PrometheusUnavailableError`: cannot reach Prometheus (refused, timeout,
  5xx, not JSON) → the page says "Prometheus unavailable".
- `PrometheusQueryError`: Prometheus answered but rejected the query
  (bad PromQL) → only that chart shows the error.
"""

from __future__ import annotations

from typing import Any

import aiohttp


class PrometheusUnavailableError(Exception):
    """Prometheus cannot be reached or did not answer sensibly."""


class PrometheusQueryError(Exception):
    """Prometheus answered with an error for this query."""


class DashboardPrometheus:
    """Queries one Prometheus over an `aiohttp.ClientSession` the caller owns."""

    def __init__(self, url: str, session: aiohttp.ClientSession, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        try:
            async with self._session.get(
                f"{self.url}{path}", params=params, timeout=self._timeout
            ) as resp:
                if resp.status >= 500:
                    raise PrometheusUnavailableError(f"HTTP {resp.status} from Prometheus")
                try:
                    body: dict[str, Any] = await resp.json(content_type=None)
                except ValueError as exc:
                    raise PrometheusUnavailableError(
                        f"Prometheus sent no JSON (HTTP {resp.status})"
                    ) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise PrometheusUnavailableError(_describe(exc)) from exc
        if body.get("status") != "success":
            raise PrometheusQueryError(str(body.get("error") or f"HTTP {resp.status}"))
        data: dict[str, Any] = body.get("data") or {}
        return data

    async def query(self, promql: str) -> dict[str, Any]:
        """Instant query → the response's ``data``."""
        return await self._get("/api/v1/query", {"query": promql})

    async def query_range(
        self, promql: str, start: float, end: float, step_s: float
    ) -> dict[str, Any]:
        """Range query → the response's ``data`` (a matrix)."""
        params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}"}
        params["step"] = f"{step_s:g}s"
        return await self._get("/api/v1/query_range", params)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out waiting for Prometheus"
    text = str(exc) or type(exc).__name__
    return f"cannot reach Prometheus: {text}"
