"""An async client of the Prometheus HTTP API (instant and range queries).

`PrometheusClient` speaks HTTP; `PrometheusMetricsSource` turns the fleet's
PromQL (from the CR, placeholders filled in) into one `scaling.Metrics`
observation. Failures never raise out of `observe()`: a failed or empty
query is `None` for that value, counted in the operator's metrics.
"""

from __future__ import annotations

import math
import string
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import structlog

from wsfleet_operator import opmetrics
from wsfleet_operator.scaling import Metrics
from wsfleet_operator.spec import FleetSpec

log = structlog.get_logger("wsfleet.operator.prometheus")


class PrometheusError(Exception):
    """A query failed (unreachable, or an error answer)."""


class PrometheusUnavailableError(PrometheusError):
    """Prometheus cannot be reached or did not answer sensibly (refused, timeout, 5xx,
    not JSON): the dashboard says "Prometheus unavailable", the autoscaler holds."""


class PrometheusQueryError(PrometheusError):
    """Prometheus answered, with an error for this query (bad PromQL): only that chart or
    that value is missing."""


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    points: list[tuple[float, float]]


class PrometheusClient:
    """`/api/v1/query` and `/api/v1/query_range` of one Prometheus, for the autoscaler, the
    forecast and the dashboard alike.

    Over its own aiohttp session, or over `session` when the caller owns one (the
    dashboard shares one session between the Prometheus servers of its fleets).
    """

    def __init__(
        self, url: str, timeout_s: float = 5.0, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session = session
        self._owned = session is None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
            self._owned = True
        return self._session

    async def close(self) -> None:
        if self._owned and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> PrometheusClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _get(self, path: str, params: dict[str, str], kind: str) -> dict[str, Any]:
        started = time.monotonic()
        try:
            try:
                async with self._http().get(
                    self.url + path, params=params, timeout=self._timeout
                ) as resp:
                    if resp.status >= 500:
                        raise PrometheusUnavailableError(f"HTTP {resp.status} from Prometheus")
                    try:
                        body = await resp.json(content_type=None)
                    except ValueError as exc:
                        raise PrometheusUnavailableError(
                            f"Prometheus sent no JSON (HTTP {resp.status})"
                        ) from exc
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise PrometheusUnavailableError(_describe(exc)) from exc
            if not isinstance(body, dict) or body.get("status") != "success":
                error = body.get("error") if isinstance(body, dict) else None
                raise PrometheusQueryError(str(error or f"HTTP {resp.status}"))
        except PrometheusError:
            opmetrics.PROM_ERRORS.labels(kind=kind).inc()
            raise
        finally:
            opmetrics.PROM_LATENCY.labels(kind=kind).observe(time.monotonic() - started)
        data: dict[str, Any] = body.get("data") or {}
        return data

    async def query_data(self, promql: str, at: float | None = None) -> dict[str, Any]:
        """An instant query: the answer's `data` as Prometheus sent it."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return await self._get("/api/v1/query", params, "instant")

    async def query_range_data(
        self, promql: str, start: float, end: float, step_s: float
    ) -> dict[str, Any]:
        """A range query: the answer's `data` (a matrix) as Prometheus sent it."""
        params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}"}
        params["step"] = f"{step_s:g}"  # float seconds: "0.5s" is no duration to Prometheus
        return await self._get("/api/v1/query_range", params, "range")

    async def query(self, promql: str, at: float | None = None) -> list[Sample]:
        """An instant query; vectors and scalars both come back as samples."""
        data = await self.query_data(promql, at)
        kind = data.get("resultType")
        if kind == "scalar":
            return [Sample({}, float(data["result"][1]))]
        if kind != "vector":
            raise PrometheusQueryError(f"unexpected result type {kind}")
        return [Sample(dict(r["metric"]), float(r["value"][1])) for r in data["result"]]

    async def query_range(
        self, promql: str, start: float, end: float, step_s: float
    ) -> list[Series]:
        data = await self.query_range_data(promql, start, end, step_s)
        return [
            Series(dict(r["metric"]), [(float(t), float(v)) for t, v in r["values"]])
            for r in data.get("result") or []
        ]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out waiting for Prometheus"
    text = str(exc) or type(exc).__name__
    return f"cannot reach Prometheus: {text}"


def render_query(template: str, spec: FleetSpec, namespace: str, name: str) -> str:
    """Fill `${selector}`, `${rateWindow}`, `${namespace}`, `${name}` into a query."""
    values = {"namespace": namespace, "name": name, "rateWindow": spec.prometheus.rate_window}
    selector = string.Template(spec.prometheus.selector).safe_substitute(values)
    return string.Template(template).safe_substitute({**values, "selector": selector})


class MetricsSource(Protocol):
    """Where the autoscaler's observations come from."""

    async def observe(self, now: float) -> Metrics | None: ...

    async def pod_connections(self) -> dict[str, int] | None: ...


def single_value(samples: Iterable[Sample]) -> float | None:
    """The sum of a query's finite samples (one series, or a sum of several); None: none."""
    values = [s.value for s in samples if math.isfinite(s.value)]
    return sum(values) if values else None


class PrometheusMetricsSource:
    """The fleet's metrics from Prometheus, with the CR's queries."""

    def __init__(
        self,
        client: PrometheusClient,
        spec_provider: Callable[[], FleetSpec],
        namespace: str,
        name: str,
        pod_label: str = "pod",
    ) -> None:
        self.client = client
        self.spec_provider = spec_provider
        self.namespace = namespace
        self.name = name
        self.pod_label = pod_label
        self.last_error: str | None = None

    def _q(self, template: str) -> str:
        return render_query(template, self.spec_provider(), self.namespace, self.name)

    async def _value(self, template: str) -> float | None:
        try:
            return single_value(await self.client.query(self._q(template)))
        except PrometheusError as exc:
            self.last_error = str(exc)
            log.warning("prometheus.query_failed", fleet=self.name, error=str(exc))
            return None

    async def observe(self, now: float) -> Metrics | None:
        spec = self.spec_provider()
        q = spec.prometheus.queries
        self.last_error = None
        connections = await self._value(q.connections)
        latency = (
            await self._value(q.switch_latency_p95)
            if spec.targets.switch_latency_p95_ms is not None
            else None
        )
        rate = (
            await self._value(q.message_rate)
            if spec.targets.messages_per_second_per_pod is not None
            else None
        )
        draining = await self._value(q.draining) if connections is not None else None
        return Metrics(
            observed_at=now,
            connections=connections,
            switch_latency_p95_s=latency,
            message_rate=rate,
            draining=draining,
        )

    async def pod_connections(self) -> dict[str, int] | None:
        """Live connections per pod (None when Prometheus cannot say)."""
        template = self.spec_provider().prometheus.queries.pod_connections
        try:
            samples = await self.client.query(self._q(template))
        except PrometheusError as exc:
            self.last_error = str(exc)
            return None
        out: dict[str, int] = {}
        for s in samples:
            pod = s.labels.get(self.pod_label)
            if pod and math.isfinite(s.value):
                out[pod] = out.get(pod, 0) + round(s.value)
        return out
