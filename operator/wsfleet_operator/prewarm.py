"""Pre-warm gateway caches for the hottest channels before a predicted peak.

The pure rule (`prewarm_due`): once per predicted peak, as soon as `now` is within
`forecast.prewarmBeforeSeconds` (default 1 h, architecture § Numbers) of the
forecaster's next peak. The peak it was done for is kept (`CachePrewarmer.prewarmed_for`,
reported as `status.forecast.prewarmedFor`), so a tick that repeats, or a refit that moves
the predicted peak by less than the window, does not pre-warm again.

The I/O edge (`CachePrewarmer.run`): the hottest channels come from the gateways' own
popularity set in Redis (`wsf:hot`, kept by `wsfleet_gateway.cache.prewarm.HotTracker`); each
ready gateway pod gets `POST /api/prewarm {"channels": [...]}` on its admin port with
`Authorization: Bearer <api key>` (the key read from `auth.apiKeySecretRef`). Every
failure becomes a Warning Event, never an exception. Keys are never logged.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from wsfleet_operator import kube
from wsfleet_operator.kube import KubeClient
from wsfleet_operator.resources import selector_labels
from wsfleet_operator.spec import FleetSpec, SecretKeyRef, SecretKeySelector

log = structlog.get_logger("wsfleet.operator.prewarm")

HOT_KEY = "wsf:hot"
"""The gateways' channel popularity sorted set (`wsfleet_gateway.cache.prewarm.HOT_KEY`)."""


def prewarm_due(now: float, peak_at: float | None, before_s: float, done_for: float | None) -> bool:
    """Pre-warm now for the peak predicted at `peak_at`?

    True inside [peak_at - before_s, peak_at) unless that peak (or one predicted less
    than `before_s` from it: the same evening, refitted) was pre-warmed already.
    """
    if peak_at is None or before_s <= 0:
        return False
    if not peak_at - before_s <= now < peak_at:
        return False
    return done_for is None or abs(peak_at - done_for) >= before_s


@dataclass(frozen=True)
class PodResult:
    pod: str
    loaded: int | None
    """Channels the pod loaded into L1 (None: the call failed)."""
    error: str | None = None


@dataclass(frozen=True)
class PrewarmReport:
    """What one pre-warm did (turned into an Event by the autoscaler)."""

    peak_at: float
    channels: int
    results: tuple[PodResult, ...]
    problem: str | None = None
    """Why nothing was sent (no API key, no channels, no pods)."""

    @property
    def failed(self) -> list[PodResult]:
        return [r for r in self.results if r.error is not None]

    @property
    def ok(self) -> bool:
        return self.problem is None and not self.failed

    def message(self) -> str:
        if self.problem is not None:
            return f"cache pre-warm for the peak at {self.peak_at:.0f} skipped: {self.problem}"
        done = [r for r in self.results if r.error is None]
        text = (
            f"pre-warmed {self.channels} hottest channels on {len(done)}/{len(self.results)} "
            f"gateway pods for the predicted peak at {self.peak_at:.0f}"
        )
        if self.failed:
            text += "; failed: " + ", ".join(f"{r.pod} ({r.error})" for r in self.failed[:5])
        return text


@dataclass(frozen=True)
class PodAddress:
    """Where one gateway's admin API listens (port None: `spec.gateway.adminPort`)."""

    name: str
    host: str
    port: int | None = None


Pods = Callable[[], Awaitable[list[PodAddress]]]
"""-> the fleet's ready gateway pods (the local fleet passes its processes' admin ports)."""
Hottest = Callable[[int], Awaitable[list[str]]]
"""n -> the n hottest channels fleet-wide."""
ApiKey = Callable[[], Awaitable[str | None]]
"""-> the admin API key (None: not configured)."""


async def post_prewarm(
    session: aiohttp.ClientSession,
    address: str,
    port: int,
    api_key: str,
    channels: Sequence[str],
    timeout_s: float,
) -> int:
    """`POST /api/prewarm` on one gateway; returns how many channels it loaded."""
    host = f"[{address}]" if ":" in address else address
    async with session.post(
        f"http://{host}:{port}/api/prewarm",
        json={"channels": list(channels)},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=aiohttp.ClientTimeout(total=timeout_s),
    ) as resp:
        body = await resp.json(content_type=None)
        if resp.status != 200:
            code = body.get("error") if isinstance(body, dict) else None
            raise RuntimeError(f"HTTP {resp.status} {code or ''}".strip())
        return int(body.get("loaded", 0))


class CachePrewarmer:
    """Decides (pure rule) and performs (I/O callables) one fleet's pre-warms."""

    def __init__(
        self,
        pods: Pods,
        hottest: Hottest,
        api_key: ApiKey,
        *,
        timeout_s: float = 5.0,
        prewarmed_for: float | None = None,
    ) -> None:
        self.pods = pods
        self.hottest = hottest
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.prewarmed_for = prewarmed_for

    async def maybe(
        self, spec: FleetSpec, now: float, peak_at: float | None
    ) -> PrewarmReport | None:
        """Pre-warm when due (once per predicted peak); None when not due."""
        before = spec.forecast.prewarm_before_seconds
        if not spec.forecast.enabled or spec.dry_run:
            return None
        if not prewarm_due(now, peak_at, before, self.prewarmed_for):
            return None
        assert peak_at is not None
        self.prewarmed_for = peak_at  # once per peak, even when some pods fail
        try:
            report = await self.run(spec, peak_at)
        except Exception as exc:  # never crash the autoscaler
            # only our own messages in events: a library's might quote a URL with a password
            why = f": {exc}" if isinstance(exc, RuntimeError | kube.KubeError) else ""
            report = PrewarmReport(peak_at, 0, (), problem=f"{type(exc).__name__}{why}")
        log.info(
            "prewarm.done",
            peak_at=peak_at,
            channels=report.channels,
            pods=len(report.results),
            failed=len(report.failed),
            problem=report.problem,
        )
        return report

    async def run(self, spec: FleetSpec, peak_at: float) -> PrewarmReport:
        key = await self.api_key()
        if not key:
            return PrewarmReport(peak_at, 0, (), problem="no auth.apiKeySecretRef (or it is empty)")
        channels = await self.hottest(spec.forecast.prewarm_channels)
        if not channels:
            return PrewarmReport(peak_at, 0, (), problem="no channel popularity in Redis yet")
        pods = await self.pods()
        if not pods:
            return PrewarmReport(peak_at, len(channels), (), problem="no ready gateway pods")
        port = spec.gateway.admin_port
        async with aiohttp.ClientSession() as session:

            async def one(pod: PodAddress) -> PodResult:
                try:
                    loaded = await post_prewarm(
                        session, pod.host, pod.port or port, key, channels, self.timeout_s
                    )
                except (aiohttp.ClientError, TimeoutError, RuntimeError, ValueError) as exc:
                    return PodResult(pod.name, None, str(exc) or type(exc).__name__)
                return PodResult(pod.name, loaded)

            results = await asyncio.gather(*(one(pod) for pod in pods))
        return PrewarmReport(peak_at, len(channels), tuple(results))


# --------------------------------------------------------------------------- Kubernetes


async def read_secret_key(
    client: KubeClient, namespace: str, ref: SecretKeySelector | SecretKeyRef
) -> str | None:
    """One key of a Secret, decoded (None when the Secret or key is missing)."""
    secret = await client.get(kube.SECRETS, namespace, ref.name)
    raw = ((secret or {}).get("data") or {}).get(ref.key)
    if raw is None:
        return None
    return base64.b64decode(raw).decode().strip() or None


def _ready(pod: kube.JSON) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


async def ready_pod_addresses(client: KubeClient, namespace: str, fleet: str) -> list[PodAddress]:
    """Name and IP of the fleet's ready, not-terminating gateway pods."""
    pods = await client.list(kube.PODS, namespace, selector_labels(fleet))
    out: list[PodAddress] = []
    for pod in pods:
        meta, ip = pod.get("metadata", {}), pod.get("status", {}).get("podIP")
        if ip and meta.get("name") and not meta.get("deletionTimestamp") and _ready(pod):
            out.append(PodAddress(str(meta["name"]), str(ip)))
    return out


TRUE = ("1", "true", "yes", "on")
"""How a boolean env var says yes (pydantic-settings' reading, as the gateway's)."""


async def hottest_from_redis(
    url: str, n: int, timeout_s: float = 5.0, *, cluster: bool = False
) -> list[str]:
    """The `n` hottest channels of the fleet's Redis ([] on errors: logged, not raised).

    `cluster`: `url` is a seed node of a Redis Cluster (the fleet's gateways run with
    ``WSFLEET_REDIS_CLUSTER=true``): the key is read from the node serving its slot."""
    client: aioredis.Redis | aioredis.RedisCluster
    if cluster:
        client = aioredis.RedisCluster.from_url(url, socket_timeout=timeout_s)
    else:
        client = aioredis.Redis.from_url(url, socket_timeout=timeout_s)
    try:
        async with asyncio.timeout(timeout_s):
            rows = await client.zrevrange(HOT_KEY, 0, n - 1)
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("prewarm.hottest_failed", error=type(exc).__name__)
        return []
    finally:
        await client.aclose()
    return [r.decode() if isinstance(r, bytes) else str(r) for r in rows]


def kubernetes_prewarmer(
    client: KubeClient,
    namespace: str,
    fleet: str,
    spec_now: Callable[[], FleetSpec],
    prewarmed_for: float | None = None,
) -> CachePrewarmer:
    """A pre-warmer for one fleet of the operator: pods, Secrets and Redis of the spec."""

    async def api_key() -> str | None:
        auth = spec_now().auth
        if auth is None or auth.api_key_secret_ref is None:
            return None
        return await read_secret_key(client, namespace, auth.api_key_secret_ref)

    async def hottest(n: int) -> list[str]:
        spec = spec_now()
        url = spec.redis.effective_url()
        if url is None and spec.redis.secret_ref is not None:
            url = await read_secret_key(client, namespace, spec.redis.secret_ref)
        cluster = spec.gateway.extra_env.get("WSFLEET_REDIS_CLUSTER", "").lower() in TRUE
        return [] if url is None else await hottest_from_redis(url, n, cluster=cluster)

    async def pods() -> list[PodAddress]:
        return await ready_pod_addresses(client, namespace, fleet)

    return CachePrewarmer(pods, hottest, api_key, prewarmed_for=prewarmed_for)
