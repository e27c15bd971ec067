"""Pure chart logic: ranges, PromQL rendering, result parsing, replica history;
and the Prometheus client's failure kinds."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from wsfleet_operator.dashboard.series import (
    DEFAULT_CHARTS,
    MAX_RANGE_S,
    MIN_RANGE_S,
    TARGET_POINTS,
    LineSpec,
    Point,
    RangeSeries,
    ReplicaHistory,
    band_json,
    downsample,
    downsample_band,
    forecast_at,
    lines_from_result,
    omitted_series,
    parse_matrix,
    parse_range,
    parse_vector_sum,
    render_promql,
    step_for,
)
from wsfleet_operator.prometheus import (
    PrometheusClient,
    PrometheusQueryError,
    PrometheusUnavailableError,
)


def test_parse_range() -> None:
    assert parse_range(None) == 900
    assert parse_range("") == 900
    assert parse_range("15m") == 900
    assert parse_range("1.5h") == 5400
    assert parse_range("1s") == MIN_RANGE_S
    assert parse_range("30d") == MAX_RANGE_S
    for bad in ("15", "m", "-5m", "5 minutes", "1w"):
        with pytest.raises(ValueError, match="invalid range"):
            parse_range(bad)


@given(st.floats(min_value=MIN_RANGE_S, max_value=MAX_RANGE_S))
def test_step_bounds_the_point_count(range_s: float) -> None:
    step = step_for(range_s)
    assert step >= 1
    assert step == int(step)
    assert range_s / step <= TARGET_POINTS


def test_render_promql() -> None:
    sel = 'namespace="w",service="chat"'
    assert render_promql("sum(x{SEL})", sel, "1m") == f"sum(x{{{sel}}})"
    assert render_promql('x{SEL,r="hit"}[W]', sel, "30s") == f'x{{{sel},r="hit"}}[30s]'
    assert render_promql('x{SEL,r="hit"}[W]', "", "1m") == 'x{r="hit"}[1m]'
    assert render_promql("x{SEL}", "", "1m") == "x{}"


matchers = st.lists(
    st.tuples(st.sampled_from(["namespace", "service", "job"]), st.text("abc-", max_size=5)),
    max_size=3,
).map(lambda pairs: ",".join(f'{k}="{v}"' for k, v in pairs))


@given(matchers)
def test_every_default_query_renders_to_well_formed_matchers(selector: str) -> None:
    for chart in DEFAULT_CHARTS:
        for line in chart.lines:
            q = render_promql(line.promql, selector, "1m")
            assert "SEL" not in q
            assert "[W]" not in q
            assert "{," not in q
            assert ",}" not in q
            assert q.count("{") == q.count("}")


def test_parse_matrix_and_vector() -> None:
    data = {
        "resultType": "matrix",
        "result": [
            {"metric": {"layer": "l1"}, "values": [[1.0, "1"], [2.0, "NaN"], [3.0, "+Inf"]]},
            {"metric": {}, "values": [[1.0, "bad"]]},
        ],
    }
    series = parse_matrix(data)
    assert series[0].labels == {"layer": "l1"}
    assert series[0].points == ((1.0, 1.0), (2.0, None), (3.0, None))
    assert series[1].points == ((1.0, None),)
    assert parse_matrix({"result": []}) == []
    assert parse_vector_sum({"result": [{"value": [1, "2"]}, {"value": [1, "3.5"]}]}) == 5.5
    assert parse_vector_sum({"result": []}) is None
    assert parse_vector_sum({"result": [{"value": [1, "NaN"]}]}) is None


def test_lines_from_result() -> None:
    plain = LineSpec("actual", "x")
    assert lines_from_result(plain, []) == [
        {"name": "actual", "kind": "line", "points": [], "last": None}
    ]
    one = [RangeSeries({}, ((1.0, 3.0), (2.0, None)))]
    assert lines_from_result(plain, one)[0]["last"] == 3.0
    split = LineSpec("", "x", split_by="layer")
    out = lines_from_result(
        split, [RangeSeries({"layer": "l2"}, ((1.0, 1.0),)), RangeSeries({}, ((1.0, 0.5),))]
    )
    assert [line["name"] for line in out] == ["?", "l2"]


def test_forecast_at() -> None:
    points = [(0.0, 10.0), (10.0, 20.0), (10.0, 30.0), (20.0, 0.0)]
    assert forecast_at([], 5) is None
    assert forecast_at(points, -1) is None
    assert forecast_at(points, 21) is None
    assert forecast_at(points, 5) == 15.0
    assert forecast_at(points, 15) == 15.0
    assert forecast_at([(0.0, 1.0)], 0.0) == 1.0


@given(
    st.lists(st.tuples(st.floats(0, 1000), st.floats(0, 1e6)), min_size=1, max_size=20).map(sorted),
    st.floats(0, 1000),
)
def test_forecast_at_stays_within_the_neighbours(
    points: list[tuple[float, float]], t: float
) -> None:
    value = forecast_at(points, t)
    if t < points[0][0] or t > points[-1][0]:
        assert value is None
    else:
        assert value is not None
        assert math.isfinite(value)
        assert min(v for _, v in points) - 1e-6 <= value <= max(v for _, v in points) + 1e-6


def test_split_lines_keep_the_highest_pods() -> None:
    spec = LineSpec("", "x", split_by="pod", max_series=2)
    series = [
        RangeSeries({"pod": "a"}, ((1.0, 10.0), (2.0, 20.0))),
        RangeSeries({"pod": "b"}, ((1.0, 90.0), (2.0, None))),
        RangeSeries({"pod": "c"}, ((1.0, None),)),
        RangeSeries({"pod": "d"}, ((1.0, 5.0), (2.0, 50.0))),
    ]
    assert [line["name"] for line in lines_from_result(spec, series)] == ["b", "d"]
    assert omitted_series(spec, series) == 2
    assert omitted_series(LineSpec("a", "x"), series) == 0
    assert omitted_series(spec, series[:2]) == 0


def test_memory_charts_follow_the_process_collector_per_pod() -> None:
    charts = {c.id: c for c in DEFAULT_CHARTS}
    sel = 'namespace="w",service="chat"'
    rss = charts["memory"].lines[0]
    assert rss.split_by == "pod"
    assert render_promql(rss.promql, sel, "1m") == (
        f"sum by (pod) (process_resident_memory_bytes{{{sel}}})"
    )
    per_conn = charts["memory_per_connection"].lines[0]
    assert per_conn.split_by == "pod"
    # idle pods drop out rather than dividing by zero
    assert f"wsfleet_connections{{{sel}}} > 0" in render_promql(per_conn.promql, sel, "1m")
    assert charts["memory"].unit == charts["memory_per_connection"].unit == "bytes"
    # anomalies marked where they show: every signal on the connections timeline
    assert charts["connections"].anomalies == ("*",)
    assert "MemoryLeak" in charts["memory"].anomalies
    assert "SwitchLatency" in charts["switch_latency"].anomalies
    assert "DeliveryLatency" in charts["delivery_latency"].anomalies


def test_downsample_keeps_peaks_dips_gaps_and_ends() -> None:
    points: list[Point] = [(float(t), float(t % 7)) for t in range(1000)]
    points[500] = (500.0, 1000.0)  # a spike
    points[700] = (700.0, None)  # a gap
    out = downsample(points, 100)
    assert len(out) <= 100
    assert out[0] == points[0]
    assert out[-1] == points[-1]
    assert (500.0, 1000.0) in out
    assert (700.0, None) in out
    assert downsample(points[:50], 100) == points[:50]
    same_time: list[Point] = [(1.0, float(v)) for v in range(20)]
    assert len(downsample(same_time, 10)) <= 10


point_lists = st.lists(
    st.tuples(
        st.floats(0, 1e6, allow_nan=False),
        st.none() | st.floats(-1e9, 1e9, allow_nan=False, allow_infinity=False),
    ),
    max_size=400,
).map(lambda points: sorted(points, key=lambda p: p[0]))


@given(point_lists, st.integers(5, 300))
def test_downsample_is_a_bounded_ordered_subset(points: list[Point], max_points: int) -> None:
    out = downsample(points, max_points)
    assert len(out) <= max_points
    assert all(p in points for p in out)
    assert [p[0] for p in out] == sorted(p[0] for p in out)
    values = [v for _, v in points if v is not None]
    kept = [v for _, v in out if v is not None]
    if values:  # the extremes survive: a spike never vanishes from the picture
        assert max(values) in kept
        assert min(values) in kept
    if any(v is None for _, v in points):
        assert any(v is None for _, v in out)  # so do breaks in the line


@given(st.integers(0, 3000), st.integers(1, 400))
def test_downsample_band_is_bounded(n: int, max_points: int) -> None:
    band = [(float(t), 1.0, 2.0) for t in range(n)]
    out = downsample_band(band, max_points)
    assert len(out) <= max(max_points, 1)
    assert all(p in band for p in out)
    if n:
        assert out[-1] == band[-1]
        if max_points > 1:
            assert out[0] == band[0]


def test_band_json() -> None:
    assert band_json("p90", [(1.0, 2.0, 3.0)]) == {
        "name": "p90",
        "kind": "band",
        "points": [[1.0, 2.0, 3.0]],
        "last": 3.0,
    }
    assert band_json("p90", [])["last"] is None


def test_replica_history_is_bounded_and_forgets() -> None:
    history = ReplicaHistory(max_points=3)
    for t in range(5):
        history.record(("ns", "a"), float(t), t, t, None, 1.5 if t % 2 else None, 2.0)
    history.record(("ns", "b"), 0.0, 1, 1, 1)
    lines = history.lines(("ns", "a"), 0, 10)
    assert [p[0] for p in lines["desired"]] == [2.0, 3.0, 4.0]
    assert lines["ready"] == [(2.0, None), (3.0, None), (4.0, None)]
    assert lines["forecast"] == [(3.0, 1.5)]
    assert history.lines(("ns", "a"), 3.5, 10)["desired"] == [(4.0, 4.0)]
    assert history.band(("ns", "a"), 0, 10) == [(3.0, 1.5, 2.0)]
    history.retain([("ns", "b")])
    assert history.lines(("ns", "a"), 0, 10)["desired"] == []
    assert history.lines(("ns", "b"), 0, 10)["desired"] == [(0.0, 1.0)]


@pytest.fixture
async def odd_prometheus() -> AsyncIterator[str]:
    """An HTTP server answering like a broken proxy or a Prometheus refusing a query."""

    release = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        q = request.query["query"]
        if q == "five-hundred":
            return web.Response(status=503, text="upstream down")
        if q == "html":
            return web.Response(status=200, text="<html>login</html>", content_type="text/html")
        if q == "bad":
            return web.json_response(
                {"status": "error", "errorType": "bad_data", "error": "parse error"}, status=400
            )
        if q == "hang":
            await release.wait()  # no answer until teardown; the client times out
        if q == "nodata":
            return web.json_response({"status": "error"}, status=422)
        return web.json_response({"status": "success", "data": {"result": []}})

    app = web.Application()
    app.router.add_get("/api/v1/query", handler)
    app.router.add_get("/api/v1/query_range", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        release.set()
        await runner.cleanup()


async def test_prometheus_client_failure_kinds(odd_prometheus: str) -> None:
    async with aiohttp.ClientSession() as session:
        prom = PrometheusClient(odd_prometheus, timeout_s=5, session=session)
        assert await prom.query_data("ok") == {"result": []}
        assert await prom.query_range_data("ok", 0, 60, 15) == {"result": []}
        with pytest.raises(PrometheusUnavailableError, match="HTTP 503"):
            await prom.query_data("five-hundred")
        with pytest.raises(PrometheusUnavailableError, match="no JSON"):
            await prom.query_data("html")
        with pytest.raises(PrometheusQueryError, match="parse error"):
            await prom.query_range_data("bad", 0, 60, 15)
        with pytest.raises(PrometheusQueryError, match="HTTP 422"):
            await prom.query_data("nodata")
        impatient = PrometheusClient(odd_prometheus, timeout_s=0.2, session=session)
        with pytest.raises(PrometheusUnavailableError, match="timed out"):
            await impatient.query_data("hang")
        await prom.close()  # the session is the caller's: still open
        assert not session.closed
