"""Typed models of the `WebSocketFleet` custom resource (spec and status).

One source of truth: the CRD in `crds/` is generated from these models
(`python -m wsfleet_operator.crd`). Field names are snake_case in Python and
camelCase on the wire. Durations are integer seconds (`...Seconds`), rates
are per second or per minute as named.
"""

from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

GROUP = "wsfleet.io"
VERSION = "v1alpha1"
KIND = "WebSocketFleet"
PLURAL = "websocketfleets"
SINGULAR = "websocketfleet"
SHORT_NAMES = ("wsf",)
API_VERSION = f"{GROUP}/{VERSION}"


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-compatible camelCase form (as stored in Kubernetes)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def cel(rule: str, message: str, needs: tuple[str, ...] = ()) -> ConfigDict:
    """A CEL rule the API server checks on this object (`x-kubernetes-validations`).

    `message` is also what `semantic_errors` reports for API servers and paths that do not
    run CEL (the local fleet, an older CRD), so both say the same words. The rule holds
    while a field it `needs` is absent: the API server also checks the schema's own
    defaults (`{}` for nested objects, filled in field by field only on real objects).
    """
    guarded = " || ".join([*(f"!has(self.{f})" for f in needs), f"({rule})"]) if needs else rule
    return ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [{"rule": guarded, "message": message}]}
    )


PORTS_DIFFER = "gateway.port and gateway.adminPort must differ"
REPLICAS_ORDER = "replicas.min must not exceed replicas.max"
UTILIZATION_ORDER = "targets.scaleDownUtilization must be below targets.targetUtilization"
IDLE_AFTER_HEARTBEAT = "limits.idleTimeoutSeconds must be greater than limits.heartbeatSeconds"
REDIS_ONE_SOURCE = "redis: set url or secretRef, not both"
REDIS_NO_CREDENTIALS = "redis.url must not carry credentials: use redis.secretRef"
FALLBACK_NEEDS_REPLICAS = "prometheus.fallback=Replicas needs prometheus.fallbackReplicas"


# --------------------------------------------------------------------------- gateway


class PullPolicy(enum.StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class Quantities(WireModel):
    """Kubernetes resource quantities (`250m`, `512Mi`)."""

    cpu: str = Field(pattern=r"^[0-9]+(\.[0-9]+)?m?$")
    memory: str = Field(pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")


class ResourcesSpec(WireModel):
    requests: Quantities = Field(default_factory=lambda: Quantities(cpu="250m", memory="256Mi"))
    limits: Quantities = Field(default_factory=lambda: Quantities(cpu="1", memory="2Gi"))


class GatewaySpec(WireModel):
    """The gateway container."""

    model_config = cel("self.port != self.adminPort", PORTS_DIFFER, ("port", "adminPort"))

    image: str = Field(default="ghcr.io/wsfleet/gateway:0.1.0", min_length=1)
    image_pull_policy: PullPolicy = PullPolicy.IF_NOT_PRESENT
    port: int = Field(default=8080, ge=1, le=65535, description="public WebSocket port (/ws)")
    admin_port: int = Field(
        default=9090, ge=1, le=65535, description="metrics, /healthz and /readyz"
    )
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    log_level: str = Field(default="info", pattern=r"^(debug|info|warning|error)$")
    extra_env: dict[str, str] = Field(
        default_factory=dict, description="extra plain env vars (never secrets)"
    )
    service_type: str = Field(default="ClusterIP", pattern=r"^(ClusterIP|NodePort|LoadBalancer)$")

    @model_validator(mode="after")
    def _ports_differ(self) -> GatewaySpec:
        if self.port == self.admin_port:
            raise ValueError(PORTS_DIFFER)
        return self


class ReplicasSpec(WireModel):
    model_config = cel("self.min <= self.max", REPLICAS_ORDER, ("min", "max"))

    min: int = Field(default=2, ge=1, le=1000)
    max: int = Field(default=10, ge=1, le=1000)


class SecretKeyRef(WireModel):
    name: str = Field(min_length=1)
    key: str = Field(default="url", min_length=1)


class SecretKeySelector(WireModel):
    """One key of a Secret in the fleet's namespace (the value is never copied anywhere)."""

    name: str = Field(min_length=1, max_length=253)
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")


_AUTH_ONE_OF = (
    "(has(self.jwtSecretRef) ? 1 : 0) + (has(self.jwtPublicKeySecretRef) ? 1 : 0)"
    " + ((has(self.disabled) && self.disabled) ? 1 : 0) == 1"
)
AUTH_ONE_OF_MESSAGE = "auth: set exactly one of jwtSecretRef, jwtPublicKeySecretRef, disabled: true"


class AuthSpec(WireModel):
    """How the gateways authenticate clients and admin writes: Secrets by reference only."""

    model_config = cel(_AUTH_ONE_OF, AUTH_ONE_OF_MESSAGE)

    jwt_secret_ref: SecretKeySelector | None = Field(
        default=None, description="HS256 shared secret (env WSFLEET_JWT_SECRET from the Secret)"
    )
    jwt_public_key_secret_ref: SecretKeySelector | None = Field(
        default=None,
        description="RS256 public key PEM, mounted read-only (WSFLEET_JWT_PUBLIC_KEY_FILE)",
    )
    disabled: bool = Field(
        default=False, description="no authentication at all: development only (warned loudly)"
    )
    api_key_secret_ref: SecretKeySelector | None = Field(
        default=None,
        description="bearer key of the admin write API (WSFLEET_API_KEY); the operator uses it "
        "to pre-warm caches",
    )

    def errors(self) -> list[str]:
        """What the CEL rule says, for API servers and paths that do not run it."""
        chosen = [
            self.jwt_secret_ref is not None,
            self.jwt_public_key_secret_ref is not None,
            self.disabled,
        ]
        return [] if sum(chosen) == 1 else [AUTH_ONE_OF_MESSAGE]


DEFAULT_REDIS_URL = "redis://redis:6379/0"


class RedisSpec(WireModel):
    """Redis URL, inline (no password!) or from a Secret key."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "!has(self.url) || !has(self.secretRef)", "message": REDIS_ONE_SOURCE},
                {
                    "rule": "!has(self.url) || !self.url.contains('@')",
                    "message": REDIS_NO_CREDENTIALS,
                },
            ]
        }
    )

    url: str | None = Field(
        default=None, max_length=2048, description="redis://host:port/db without credentials"
    )
    secret_ref: SecretKeyRef | None = None

    def effective_url(self) -> str | None:
        """The inline URL (or the in-namespace default); None when from a Secret."""
        if self.secret_ref is not None:
            return None
        return self.url or DEFAULT_REDIS_URL


# --------------------------------------------------------------------------- metrics


DEFAULT_SELECTOR = 'namespace="${namespace}",service="${name}"'


class QueriesSpec(WireModel):
    """PromQL with `${selector}`, `${rateWindow}`, `${namespace}`, `${name}` placeholders.

    Defaults follow the gateway metrics contract (prefix `wsfleet_`).
    """

    connections: str = "sum(wsfleet_connections{${selector}})"
    pod_connections: str = "sum by (pod) (wsfleet_connections{${selector}})"
    switch_latency_p95: str = (
        "histogram_quantile(0.95, sum by (le) "
        "(rate(wsfleet_channel_switch_seconds_bucket{${selector}}[${rateWindow}])))"
    )
    message_rate: str = "sum(rate(wsfleet_messages_total{${selector}}[${rateWindow}]))"
    draining: str = "sum(wsfleet_drain_in_progress{${selector}})"


class FallbackMode(enum.StrEnum):
    HOLD = "Hold"
    """keep the current replica count"""
    REPLICAS = "Replicas"
    """go up to `fallbackReplicas` (never down)"""


class PrometheusSpec(WireModel):
    model_config = cel(
        "self.fallback != 'Replicas' || has(self.fallbackReplicas)",
        FALLBACK_NEEDS_REPLICAS,
        ("fallback",),
    )

    url: str = Field(default="http://prometheus-operated.monitoring.svc:9090", min_length=1)
    selector: str = Field(default=DEFAULT_SELECTOR, description="label matchers of this fleet")
    rate_window: str = Field(default="1m", pattern=r"^[0-9]+(ms|s|m|h)$")
    queries: QueriesSpec = Field(default_factory=QueriesSpec)
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    stale_after_seconds: int = Field(
        default=120, ge=0, le=3600, description="hold the last good metrics this long"
    )
    fallback: FallbackMode = FallbackMode.HOLD
    fallback_replicas: int | None = Field(default=None, ge=1, le=1000)


# --------------------------------------------------------------------------- targets


class TargetsSpec(WireModel):
    model_config = cel(
        "self.scaleDownUtilization < self.targetUtilization",
        UTILIZATION_ORDER,
        ("scaleDownUtilization", "targetUtilization"),
    )

    connections_per_pod: int = Field(
        default=1000, ge=1, le=100000, description="connection capacity of one pod"
    )
    target_utilization: float = Field(
        default=0.8, gt=0, le=1, description="scale up above this share of capacity"
    )
    scale_down_utilization: float = Field(
        default=0.4, gt=0, le=1, description="scale down only below this share"
    )
    switch_latency_p95_ms: float | None = Field(default=500.0, gt=0, le=600000)
    messages_per_second_per_pod: float | None = Field(default=None, gt=0)


# --------------------------------------------------------------------------- behavior


class SelectPolicy(enum.StrEnum):
    MAX = "Max"
    """allow the larger of the pods and percent limits"""
    MIN = "Min"
    """allow the smaller of the two"""
    DISABLED = "Disabled"
    """never scale in this direction"""


class DirectionBehavior(WireModel):
    """Stabilization and rate limits of one direction (HPA `behavior`)."""

    stabilization_window_seconds: int = Field(default=0, ge=0, le=3600)
    max_pods_per_minute: int = Field(default=4, ge=1, le=1000)
    max_percent_per_minute: int = Field(default=100, ge=1, le=1000)
    select_policy: SelectPolicy = SelectPolicy.MAX


class ScaleDownBehavior(DirectionBehavior):
    """Scale down after 10 minutes below target, one pod (or 10 %) a minute."""

    stabilization_window_seconds: int = Field(default=600, ge=0, le=86400)
    max_pods_per_minute: int = Field(default=1, ge=1, le=1000)
    max_percent_per_minute: int = Field(default=10, ge=1, le=1000)


class BehaviorSpec(WireModel):
    tolerance: float = Field(default=0.1, ge=0, lt=1)
    scale_up: DirectionBehavior = Field(default_factory=DirectionBehavior)
    scale_down: ScaleDownBehavior = Field(default_factory=ScaleDownBehavior)
    interval_seconds: float = Field(default=15.0, ge=0.1, le=600, description="decision timer")


# --------------------------------------------------------------------------- gateway limits


class LimitsSpec(WireModel):
    """Passed to every gateway pod as environment."""

    model_config = cel(
        "self.idleTimeoutSeconds > self.heartbeatSeconds",
        IDLE_AFTER_HEARTBEAT,
        ("idleTimeoutSeconds", "heartbeatSeconds"),
    )

    connections_per_user_per_minute: int = Field(default=10, ge=1)
    free_tier_channels: int = Field(default=3, ge=1)
    paid_tier_channels: int = Field(default=10, ge=1)
    max_connections_per_pod: int = Field(default=2000, ge=1, description="node cap (close 4009)")
    max_message_bytes: int = Field(default=65536, ge=256, le=16 * 1024 * 1024)
    bandwidth_bytes_per_second: int = Field(default=102400, ge=1024)
    heartbeat_seconds: int = Field(default=30, ge=1)
    idle_timeout_seconds: int = Field(default=60, ge=1)


class DrainSpec(WireModel):
    grace_period_seconds: int = Field(default=60, ge=1, le=3600)
    reconnect_per_second: int = Field(
        default=200, ge=1, description="reconnect budget per pod while draining"
    )


class PresenceSpec(WireModel):
    """Who is on each channel: the gateway's WSFLEET_PRESENCE settings (protocol.md)."""

    enabled: bool = True
    ttl_seconds: float = Field(
        default=60.0, ge=0.3, le=3600, description="a dead gateway's members vanish within this"
    )
    events_channels: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="glob patterns of channels whose joins and leaves are sent as events",
    )


class PrefetchSpec(WireModel):
    """Next-channel prefetch: the gateway's WSFLEET_PREFETCH settings (cache.md)."""

    enabled: bool = True
    per_connection: int = Field(default=2, ge=0, le=5, description="channels held per join")
    max_channels_per_pod: int = Field(default=2000, ge=0, le=1_000_000)
    per_second: int = Field(default=200, ge=1, description="prefetch joins per second per pod")
    hold_seconds: int = Field(default=60, ge=1, le=3600)
    half_life_seconds: int = Field(
        default=86400, ge=60, description="how fast old habits fade in the model"
    )


class FeaturesSpec(WireModel):
    """Gateway features with a cost in Redis, each on by default."""

    presence: PresenceSpec = Field(default_factory=PresenceSpec)
    prefetch: PrefetchSpec = Field(default_factory=PrefetchSpec)


class CostGuardSpec(WireModel):
    max_surge_per_window: int = Field(
        default=8, ge=1, le=1000, description="pods added at most per window"
    )
    window_seconds: int = Field(default=3600, ge=60, le=7 * 86400)
    pod_hours_per_day: float | None = Field(
        default=None, gt=0, description="no scale-up once the last 24 h used this many"
    )


# --------------------------------------------------------------------------- forecast


class SeasonPrior(WireModel):
    month: int = Field(ge=1, le=12)
    multiplier: float = Field(gt=0, le=1000)


class PeakHours(WireModel):
    start_hour: int = Field(ge=0, le=23)
    end_hour: int = Field(ge=1, le=24, description="exclusive")


def _default_priors() -> list[SeasonPrior]:
    return [
        SeasonPrior(month=6, multiplier=10.0),
        SeasonPrior(month=9, multiplier=8.0),
        SeasonPrior(month=10, multiplier=6.0),
    ]


class ForecastSpec(WireModel):
    """Settings of the seasonal forecaster (consumed by `forecast/model.py`)."""

    enabled: bool = False
    lead_time_seconds: int = Field(
        default=900, ge=0, le=7200, description="pre-scale this far ahead of a predicted peak"
    )
    timezone: str = Field(default="UTC", min_length=1)
    season_priors: list[SeasonPrior] = Field(default_factory=_default_priors)
    peak_hours: list[PeakHours] = Field(
        default_factory=lambda: [PeakHours(start_hour=18, end_hour=20)]
    )
    accuracy_threshold: float = Field(
        default=0.85, ge=0, le=1, description="below this backtest accuracy the floor is off"
    )
    headroom: float = Field(default=0.3, ge=0, le=10, description="burst headroom on top")
    floor_quantile: float = Field(
        default=0.9,
        ge=0.5,
        le=0.99,
        description="the forecast quantile the floor holds (0.9: the load the forecast"
        " expects to exceed one time in ten), before the headroom",
    )
    history_days: int = Field(default=28, ge=1, le=800)
    prewarm_before_seconds: int = Field(
        default=3600,
        ge=0,
        le=86400,
        description="pre-warm gateway caches this long before a predicted peak (0: never)",
    )
    prewarm_channels: int = Field(
        default=200, ge=1, le=10000, description="hottest channels each gateway pre-warms"
    )

    def season_multiplier(self, month: int) -> float:
        """The prior multiplier of `month` (1.0 when none is set)."""
        for prior in self.season_priors:
            if prior.month == month:
                return prior.multiplier
        return 1.0


# --------------------------------------------------------------------------- anomalies


class LatencyAnomalySpec(WireModel):
    """Switch and delivery p95 far above their own seasonal expectation: a robust z-score
    of the log latency against the forecast model fitted to the latency's history."""

    enabled: bool = True
    z_threshold: float = Field(
        default=6.0,
        ge=2,
        le=100,
        description="robust z-score (log residual / 1.4826 MAD of held-out residuals) at "
        "or above which the latency is anomalous",
    )
    min_excess_seconds: float = Field(
        default=0.025,
        ge=0,
        le=60,
        description="and at least this far above its expectation (a 1 ms to 3 ms jump is "
        "no incident)",
    )
    history_seconds: int = Field(
        default=7 * 86400,
        ge=60,
        le=90 * 86400,
        description="latency history the expectation is fitted on",
    )
    step_seconds: int = Field(default=300, ge=1, le=3600, description="resolution of that history")
    refit_seconds: int = Field(
        default=3600, ge=1, le=86400, description="refit the expectation this often"
    )
    min_points: int = Field(
        default=24,
        ge=6,
        le=100000,
        description="fewer points of history: no latency detection yet",
    )


class FloodAnomalySpec(WireModel):
    """Bursts of new connections from few users or addresses (the gateways'
    `wsfleet_connects_*` gauges)."""

    enabled: bool = True
    min_connects_per_minute: float = Field(
        default=120,
        ge=1,
        description="connection attempts per minute, fleet-wide, below which nothing is a flood",
    )
    burst_factor: float = Field(
        default=3.0,
        ge=1,
        le=1000,
        description="a flood starts at this many times the median rate of the last baselineSeconds",
    )
    top_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="share of the attempts from each pod's top user (or top address) at "
        "or above which the burst is concentrated",
    )
    baseline_seconds: int = Field(default=3600, ge=60, le=7 * 86400)
    count_client_ips: bool = Field(
        default=True,
        description="false when the gateways see one proxy's address for every client "
        "(no X-Forwarded-For trust): then only the user share counts",
    )


class LeakAnomalySpec(WireModel):
    """A pod whose memory grows beyond what its connections (and L1 cache) explain."""

    enabled: bool = True
    window_seconds: int = Field(
        default=3600, ge=10, le=7 * 86400, description="trend window of RSS per pod"
    )
    step_seconds: int = Field(default=60, ge=1, le=3600, description="its resolution")
    min_growth_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="unexplained growth over the window below this is no leak",
    )
    min_growth_ratio: float = Field(
        default=0.2,
        ge=0,
        le=100,
        description="nor below this share of the pod's RSS over the window",
    )


class AnomalyQueriesSpec(WireModel):
    """PromQL of the anomaly detectors (placeholders as in `prometheus.queries`)."""

    switch_latency_p95: str = QueriesSpec().switch_latency_p95
    delivery_latency_p95: str = (
        "histogram_quantile(0.95, sum by (le) "
        "(rate(wsfleet_message_delivery_seconds_bucket{${selector}}[${rateWindow}])))"
    )
    connects_per_minute: str = "sum(wsfleet_connects_per_minute{${selector}})"
    top_user_connects: str = (
        "sum(wsfleet_connects_per_minute{${selector}}"
        " * wsfleet_connects_top_user_share{${selector}})"
    )
    top_ip_connects: str = (
        "sum(wsfleet_connects_per_minute{${selector}} * wsfleet_connects_top_ip_share{${selector}})"
    )
    connects_baseline: str = (
        "quantile_over_time(0.5, sum(wsfleet_connects_per_minute{${selector}})"
        "[${baselineWindow}:${baselineStep}] offset 1m)"
    )
    """the median per-minute count before the current minute (a burst is not its own
    baseline)"""
    pod_memory: str = "sum by (pod) (process_resident_memory_bytes{${selector}})"
    pod_connections: str = "sum by (pod) (wsfleet_connections{${selector}})"
    pod_cache_bytes: str = "sum by (pod) (wsfleet_cache_l1_bytes{${selector}})"


class AnomaliesSpec(WireModel):
    """What the operator watches for beside scaling (docs/operate.md, "Anomalies")."""

    enabled: bool = True
    for_seconds: int = Field(
        default=60,
        ge=0,
        le=3600,
        description="an anomaly must hold this long before it is raised, and be gone this "
        "long before it is resolved",
    )
    latency: LatencyAnomalySpec = Field(default_factory=LatencyAnomalySpec)
    flood: FloodAnomalySpec = Field(default_factory=FloodAnomalySpec)
    leak: LeakAnomalySpec = Field(default_factory=LeakAnomalySpec)
    queries: AnomalyQueriesSpec = Field(default_factory=AnomalyQueriesSpec)


# --------------------------------------------------------------------------- the spec


class FleetSpec(WireModel):
    """`spec` of a WebSocketFleet."""

    gateway: GatewaySpec = Field(default_factory=GatewaySpec)
    replicas: ReplicasSpec = Field(default_factory=ReplicasSpec)
    auth: AuthSpec | None = Field(
        default=None, description="required in a cluster: how gateways authenticate"
    )
    redis: RedisSpec = Field(default_factory=RedisSpec)
    prometheus: PrometheusSpec = Field(default_factory=PrometheusSpec)
    targets: TargetsSpec = Field(default_factory=TargetsSpec)
    behavior: BehaviorSpec = Field(default_factory=BehaviorSpec)
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    drain: DrainSpec = Field(default_factory=DrainSpec)
    features: FeaturesSpec = Field(default_factory=FeaturesSpec)
    cost_guard: CostGuardSpec = Field(default_factory=CostGuardSpec)
    forecast: ForecastSpec = Field(default_factory=ForecastSpec)
    anomalies: AnomaliesSpec = Field(default_factory=AnomaliesSpec)
    dry_run: bool = False

    def semantic_errors(self) -> list[str]:
        """What the schema cannot express; empty when the spec is usable."""
        errors: list[str] = []
        if self.replicas.min > self.replicas.max:
            errors.append(f"{REPLICAS_ORDER} ({self.replicas.min} > {self.replicas.max})")
        if self.targets.scale_down_utilization >= self.targets.target_utilization:
            errors.append(UTILIZATION_ORDER)
        if self.limits.idle_timeout_seconds <= self.limits.heartbeat_seconds:
            errors.append(IDLE_AFTER_HEARTBEAT)
        if self.redis.url is not None and self.redis.secret_ref is not None:
            errors.append(REDIS_ONE_SOURCE)
        if self.redis.url is not None and "@" in self.redis.url:
            errors.append(REDIS_NO_CREDENTIALS)
        if (
            self.prometheus.fallback is FallbackMode.REPLICAS
            and self.prometheus.fallback_replicas is None
        ):
            errors.append(FALLBACK_NEEDS_REPLICAS)
        if self.auth is not None:
            errors.extend(self.auth.errors())
        return errors

    def cluster_errors(self) -> list[str]:
        """`semantic_errors` plus what a cluster needs (the operator's gateways need `auth`)."""
        errors = self.semantic_errors()
        if self.auth is None:
            errors.append(f"auth is required ({AUTH_ONE_OF_MESSAGE.removeprefix('auth: ')})")
        return errors


def parse_spec(raw: dict[str, Any] | None) -> FleetSpec:
    """Parse a wire-format spec (raises `pydantic.ValidationError`)."""
    return FleetSpec.model_validate(raw or {})


# --------------------------------------------------------------------------- status


class ConditionType(enum.StrEnum):
    READY = "Ready"
    METRICS_AVAILABLE = "MetricsAvailable"
    SCALING = "Scaling"
    CAPPED = "Capped"
    DEGRADED = "Degraded"
    AUTH_ENABLED = "AuthEnabled"
    """False (with a Warning Event) when `auth.disabled`: anyone can connect."""
    FORECAST_ACCURATE = "ForecastAccurate"
    """Only with `forecast.enabled`: the backtest accuracy vs `forecast.accuracyThreshold`."""
    ANOMALY = "Anomaly"
    """Only with `anomalies.enabled`: True while an anomaly holds (reason: its signals)."""


class Condition(WireModel):
    type: ConditionType
    status: str = Field(pattern=r"^(True|False|Unknown)$")
    reason: str = ""
    message: str = ""
    last_transition_time: str = ""


class Mode(enum.StrEnum):
    """How the last desired count came about (printer column `Mode`)."""

    METRICS = "Metrics"
    FORECAST = "Forecast"
    FLOOR = "Floor"
    CAPPED = "Capped"
    HOLD = "Hold"
    FALLBACK = "Fallback"
    DRY_RUN = "DryRun"
    INVALID = "Invalid"


class ObservedMetrics(WireModel):
    """What Prometheus said (None = no data)."""

    connections: float | None = None
    switch_latency_p95_seconds: float | None = None
    message_rate: float | None = None
    draining: float | None = None
    observed_at: float | None = Field(default=None, description="unix time of the query")


class Shares(WireModel):
    """Fractions of the desired count that came from each source (sum 1)."""

    metrics: float = 0.0
    forecast: float = 0.0
    floor: float = 0.0
    cap: float = Field(default=0.0, description="share of the uncapped count cut by caps")


class DecisionStatus(WireModel):
    desired: int
    current: int
    reason: str
    mode: Mode
    shares: Shares = Field(default_factory=Shares)
    capped: bool = False
    capped_by: list[str] = Field(default_factory=list)
    at: float


class ScalingEvent(WireModel):
    at: float
    from_replicas: int = Field(alias="from")
    to_replicas: int = Field(alias="to")
    reason: str
    dry_run: bool = False


class AnomalySignal(enum.StrEnum):
    """What an anomaly is about (`wsfleet_operator.anomaly`)."""

    SWITCH_LATENCY = "SwitchLatency"
    DELIVERY_LATENCY = "DeliveryLatency"
    CONNECT_FLOOD = "ConnectFlood"
    MEMORY_LEAK = "MemoryLeak"


class AnomalyRecord(WireModel):
    """One anomaly: raised at `at`, resolved at `resolvedAt` (absent while it holds)."""

    signal: AnomalySignal
    subject: str = Field(description="`fleet`, or the pod it is about")
    size: float = Field(description="its size when raised, in `unit`")
    threshold: float = Field(description="the size at which it is raised, in `unit`")
    unit: str
    message: str
    at: float = Field(description="unix time it began (first seen)")
    resolved_at: float | None = Field(default=None, description="unix time it ended")


class FleetStatus(WireModel):
    desired_replicas: int | None = None
    current_replicas: int | None = None
    ready_replicas: int | None = None
    connections: float | None = None
    p95_switch_ms: float | None = None
    mode: Mode | None = None
    observed: ObservedMetrics | None = None
    last_decision: DecisionStatus | None = None
    conditions: list[Condition] = Field(default_factory=list)
    history: list[ScalingEvent] = Field(default_factory=list)
    forecast: dict[str, Any] | None = Field(
        default=None, description="written by the forecaster (accuracy, next peak, floor)"
    )
    anomalies: list[AnomalyRecord] = Field(
        default_factory=list, description="the last anomalies, open ones included"
    )
    observed_generation: int | None = None


HISTORY_LIMIT = 20
