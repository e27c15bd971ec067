"""The operator's own Prometheus metrics (served by `wsfleet operator --metrics-port`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

DECISIONS = Counter(
    "wsfleet_operator_decisions_total",
    "Autoscaling decisions, by direction (up/down/none) and mode.",
    ["namespace", "fleet", "direction", "mode"],
    registry=REGISTRY,
)
SCALING_ACTIONS = Counter(
    "wsfleet_operator_scaling_actions_total",
    "Replica changes applied (dry_run=true: decided but not applied).",
    ["namespace", "fleet", "direction", "dry_run"],
    registry=REGISTRY,
)
DESIRED = Gauge(
    "wsfleet_operator_desired_replicas",
    "Replicas the last decision asked for.",
    ["namespace", "fleet"],
    registry=REGISTRY,
)
CURRENT = Gauge(
    "wsfleet_operator_current_replicas",
    "Replicas of the scale target at the last tick.",
    ["namespace", "fleet"],
    registry=REGISTRY,
)
METRICS_AVAILABLE = Gauge(
    "wsfleet_operator_metrics_available",
    "1 when the last Prometheus observation had data.",
    ["namespace", "fleet"],
    registry=REGISTRY,
)
PROM_LATENCY = Histogram(
    "wsfleet_operator_prometheus_query_seconds",
    "Latency of Prometheus HTTP API queries.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
PROM_ERRORS = Counter(
    "wsfleet_operator_prometheus_errors_total",
    "Failed Prometheus queries (HTTP, timeout, error status).",
    ["kind"],
    registry=REGISTRY,
)
KUBE_WRITES = Counter(
    "wsfleet_operator_kube_writes_total",
    "Writes (create, patch, delete) the operator's own client sent to the Kubernetes API "
    "(kopf's finalizer and annotation patches are not counted here).",
    ["verb", "resource"],
    registry=REGISTRY,
)
RECONCILES = Counter(
    "wsfleet_operator_reconciles_total",
    "Reconciliations of owned objects, by result (ok/invalid/error).",
    ["result"],
    registry=REGISTRY,
)
FORECAST_CONNECTIONS = Gauge(
    "wsfleet_operator_forecast_connections",
    "Connections the forecast floor holds the fleet at now (peak over the lead time x headroom).",
    ["namespace", "fleet"],
    registry=REGISTRY,
)
FORECAST_ACCURACY = Gauge(
    "wsfleet_operator_forecast_accuracy",
    "Backtest accuracy (1 - WAPE) of the fleet's forecast.",
    ["namespace", "fleet"],
    registry=REGISTRY,
)
FORECAST_ACCURACY_THRESHOLD = Gauge(
    "wsfleet_operator_forecast_accuracy_threshold",
    "The fleet's spec.forecast.accuracyThreshold: below it the forecast's weight is lowered, "
    "condition ForecastAccurate=False and alert WsfleetForecastAccuracyLow.",
    ["namespace", "fleet"],
    registry=REGISTRY,
)
ANOMALY = Gauge(
    "wsfleet_operator_anomaly",
    "1 while an anomaly of this signal holds for the fleet (condition Anomaly=True), else 0 "
    "(SwitchLatency, DeliveryLatency, ConnectFlood, MemoryLeak).",
    ["namespace", "fleet", "signal"],
    registry=REGISTRY,
)
ANOMALY_SCORE = Gauge(
    "wsfleet_operator_anomaly_score",
    "How near the signal came to an anomaly at the last check: the smallest ratio of its "
    "conditions to their thresholds (>= 1: every condition holds; 0: no data).",
    ["namespace", "fleet", "signal"],
    registry=REGISTRY,
)
ANOMALIES = Counter(
    "wsfleet_operator_anomalies_total",
    "Anomalies raised, by signal.",
    ["namespace", "fleet", "signal"],
    registry=REGISTRY,
)
