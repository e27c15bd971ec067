"""Pure parts of the local fleet: manifests, victim choice, metrics parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsfleet_gateway.settings import GatewaySettings

from wsfleet.loadtest.shape import target_connections
from wsfleet.localfleet.cli import DEMO_TIMING, parse_load_options
from wsfleet.localfleet.load import LOCAL_DEFAULTS
from wsfleet.localfleet.manifest import (
    ManifestError,
    Overrides,
    gateway_env,
    load_manifest,
    localize,
    parse_manifest,
    target_labels,
)
from wsfleet.localfleet.scrape import sum_metric
from wsfleet.localfleet.target import pick_victims

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


def fleet_doc(**spec: object) -> dict[str, object]:
    return {
        "apiVersion": "wsfleet.io/v1alpha1",
        "kind": "WebSocketFleet",
        "metadata": {"name": "demo", "namespace": "prod"},
        "spec": spec,
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_loads_as_a_local_fleet(path: Path) -> None:
    manifest = load_manifest(path)
    spec = localize(manifest, "http://127.0.0.1:1", "redis://127.0.0.1:2/0", Overrides())
    assert not spec.semantic_errors()
    assert spec.prometheus.url == "http://127.0.0.1:1"
    assert spec.replicas.min <= spec.replicas.max
    assert not spec.dry_run


def test_examples_exist() -> None:
    assert EXAMPLES, "examples/*.yaml are the manifests `wsfleet up` documents"


def test_localize_applies_overrides_and_keeps_the_rest() -> None:
    manifest = parse_manifest(
        fleet_doc(replicas={"min": 1, "max": 3}, prometheus={"selector": 'app="x"'})
    )
    spec = localize(
        manifest,
        "http://prom",
        "redis://r:1/0",
        Overrides(interval_s=0.5, scale_up_window_s=1, scale_down_window_s=2, drain_grace_s=3),
    )
    assert spec.behavior.interval_seconds == 0.5
    assert spec.behavior.scale_up.stabilization_window_seconds == 1
    assert spec.behavior.scale_down.stabilization_window_seconds == 2
    assert spec.drain.grace_period_seconds == 3
    assert spec.replicas.max == 3
    assert spec.prometheus.selector == 'namespace="${namespace}",service="${name}"'
    assert manifest.spec.prometheus.selector == 'app="x"'  # the manifest is not changed
    assert target_labels(manifest, "gw-1") == {
        "namespace": "prod",
        "service": "demo",
        "pod": "gw-1",
    }


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "expected a mapping"),
        ({**fleet_doc(), "kind": "Deployment"}, "kind is 'Deployment'"),
        ({**fleet_doc(), "apiVersion": "v1"}, "apiVersion is 'v1'"),
        ({**fleet_doc(), "metadata": {}}, "metadata.name is required"),
        (
            fleet_doc(replicas={"min": 5, "max": 2}),
            "replicas.min must not exceed replicas.max (5 > 2)",
        ),
        (fleet_doc(replicas={"min": 0}), "invalid spec"),
    ],
)
def test_bad_manifests_are_rejected_with_the_reason(document: object, message: str) -> None:
    with pytest.raises(ManifestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_manifest(document)


def test_load_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read"):
        load_manifest(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [")
    with pytest.raises(ManifestError, match="not valid YAML"):
        load_manifest(bad)
    other = tmp_path / "other.yaml"
    other.write_text("kind: ConfigMap\n---\n")
    with pytest.raises(ManifestError, match="no WebSocketFleet"):
        load_manifest(other)


def test_gateway_env_maps_limits_and_drain_onto_the_gateways_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manifest = parse_manifest(
        fleet_doc(
            drain={"gracePeriodSeconds": 7, "reconnectPerSecond": 50},
            limits={"connectionsPerUserPerMinute": 99, "freeTierChannels": 4},
            gateway={"extraEnv": {"WSFLEET_LINGER_S": "1"}},
        )
    )
    env = gateway_env(manifest.spec, set(GatewaySettings.model_fields))
    assert env["WSFLEET_DRAIN_GRACE_S"] == "7"
    assert env["WSFLEET_DRAIN_RECONNECT_PER_S"] == "50"
    assert env["WSFLEET_USER_CONNECTS_PER_MIN"] == "99"
    assert json.loads(env["WSFLEET_TIER_CHANNELS"]) == {"free": 4, "paid": 10}
    assert env["WSFLEET_LINGER_S"] == "1"
    # every variable is one the gateway reads: it parses them into its settings
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = GatewaySettings()
    assert settings.user_connects_per_min == 99
    assert settings.tier_channels == {"free": 4, "paid": 10}
    assert settings.drain_grace_s == 7
    assert gateway_env(manifest.spec, {"drain_grace_s"}) == {
        "WSFLEET_DRAIN_GRACE_S": "7",
        "WSFLEET_LINGER_S": "1",
    }


def test_pick_victims_prefers_emptiest_then_unknown_first_then_newest() -> None:
    counts = {"gw-1": 10.0, "gw-2": 3.0, "gw-3": None, "gw-4": 3.0}
    assert pick_victims(counts, {}, 1) == ["gw-3"]
    assert pick_victims(counts, {}, 3) == ["gw-3", "gw-4", "gw-2"]
    assert pick_victims(counts, {}, 0) == []
    assert pick_victims(counts, {}, 9) == ["gw-3", "gw-4", "gw-2", "gw-1"]
    # deletion costs from the autoscaler win over live counts
    assert pick_victims(counts, {"gw-1": -5.0, "gw-2": 9, "gw-3": 9, "gw-4": 9}, 1) == ["gw-1"]


@given(
    st.dictionaries(
        st.integers(1, 50).map(lambda n: f"gw-{n}"),
        st.one_of(st.none(), st.floats(0, 1e6, allow_nan=False)),
        max_size=12,
    ),
    st.integers(-2, 15),
)
def test_pick_victims_never_keeps_an_emptier_one(counts: dict[str, float | None], k: int) -> None:
    victims = pick_victims(counts, {}, k)
    assert len(victims) == max(0, min(k, len(counts)))
    assert len(set(victims)) == len(victims)
    kept = [counts[n] for n in counts if n not in victims]
    for name in victims:
        count = counts[name]
        if count is None:
            continue
        assert all(other is not None and other >= count for other in kept)


def test_sum_metric_sums_series_and_finds_counters() -> None:
    text = (
        "# HELP wsfleet_connections Open connections\n"
        "# TYPE wsfleet_connections gauge\n"
        'wsfleet_connections{node="a"} 3.0\n'
        'wsfleet_connections{node="b"} 4.0\n'
        "# HELP wsfleet_messages Published\n"
        "# TYPE wsfleet_messages counter\n"
        "wsfleet_messages_total 12.0\n"
        "wsfleet_messages_created 1.7e9\n"
    )
    assert sum_metric(text, "wsfleet_connections") == 7.0
    assert sum_metric(text, "wsfleet_messages_total") == 12.0
    assert sum_metric(text, "wsfleet_absent") is None


def test_local_and_cluster_gateways_get_one_env_mapping() -> None:
    """`wsfleet up` and the operator's ConfigMap share the operator's single mapping."""
    from wsfleet_operator import resources

    manifest = parse_manifest(
        fleet_doc(
            limits={"maxConnectionsPerPod": 321, "bandwidthBytesPerSecond": 4096},
            drain={"gracePeriodSeconds": 9},
            gateway={"logLevel": "debug"},
        )
    )
    local = gateway_env(manifest.spec)
    cluster = resources.gateway_env(manifest.spec)
    assert local == resources.limits_env(manifest.spec)
    assert local.items() <= cluster.items()
    assert local["WSFLEET_MAX_CONNECTIONS"] == "321"
    assert local["WSFLEET_LOG_LEVEL"] == "debug"


def test_localize_applies_the_demo_sizing() -> None:
    manifest = load_manifest(EXAMPLES[0])
    spec = localize(manifest, "http://prom", "redis://r:1/0", DEMO_TIMING)
    assert spec.targets.connections_per_pod == DEMO_TIMING.connections_per_pod
    assert spec.behavior.scale_down.max_pods_per_minute == DEMO_TIMING.scale_down_pods_per_minute
    assert spec.cost_guard.window_seconds == DEMO_TIMING.cost_guard_window_s
    assert manifest.spec.targets.connections_per_pod == 1000  # the manifest is not changed


def test_the_demo_day_needs_the_minimum_at_night_more_by_day_and_most_at_the_peak() -> None:
    """The sizing of `wsfleet up --load wedding-season` (issue 17 §5): at the demo's
    capacity per gateway, the operator's own proposal for the demo load is the
    minimum at night, more by day and most at the evening peak, within max."""
    from wsfleet_operator.scaling import Metrics, propose_from_metrics

    manifest = load_manifest(Path(__file__).parents[2] / "examples" / "01-minimal-fleet.yaml")
    spec = localize(manifest, "http://prom", "redis://r:1/0", DEMO_TIMING)
    base, compress = int(LOCAL_DEFAULTS["connections"]), float(LOCAL_DEFAULTS["compress"])
    start = float(LOCAL_DEFAULTS["start_hour"])

    def wanted_at(hour: float, current: int) -> int:
        elapsed_s = ((hour - start) % 24.0) * 3600.0 / compress
        load = target_connections(elapsed_s, base, compress, start)
        proposal = propose_from_metrics(spec, Metrics(0.0, connections=load), current)
        return max(spec.replicas.min, min(spec.replicas.max, proposal["connections"]))

    night, day, peak = wanted_at(3.0, 2), wanted_at(12.0, 2), wanted_at(19.0, 3)
    assert night == spec.replicas.min == 2
    assert day == 3
    assert 6 <= peak <= spec.replicas.max
    assert wanted_at(3.0, peak) == spec.replicas.min  # and back down after the day
    assert 86_400.0 / compress <= 300.0  # one demo day within 5 minutes


def test_the_demo_keeps_scaling_day_after_day() -> None:
    """The cost guard (at most 8 pods added per window) must not cap the demo's third day:
    each day adds 4 (2 -> 3 by day, 3 -> 6 at the peak), 3 minutes apart."""
    from wsfleet_operator.scaling import History, ScaleChange, cost_limit

    manifest = load_manifest(Path(__file__).parents[2] / "examples" / "01-minimal-fleet.yaml")
    spec = localize(manifest, "http://prom", "redis://r:1/0", DEMO_TIMING)
    day_s = 86_400.0 / float(LOCAL_DEFAULTS["compress"])
    changes = tuple(
        ScaleChange(day * day_s + at, before, after)
        for day in range(2)
        for at, before, after in ((20.0, 2, 3), (90.0, 3, 4), (91.0, 4, 5), (92.0, 5, 6))
    )
    history = History(started_at=0.0, changes=changes)
    high, capped_by = cost_limit(spec, 2, history, 2 * day_s + 20.0)
    assert (high, capped_by) == (2 + spec.cost_guard.max_surge_per_window, None)


def test_load_options_from_the_command_line() -> None:
    assert parse_load_options(["compress=960", "start_hour=18.5", "channel_prefix=x-"]) == {
        "compress": 960,
        "start_hour": 18.5,
        "channel_prefix": "x-",
    }
    assert parse_load_options([]) == {}
