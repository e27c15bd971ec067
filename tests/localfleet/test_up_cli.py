"""`wsfleet up` as a user runs it: summary, discovery, and a clean stop on a signal."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.support.waiting import wait_until
from wsfleet.client import Client, ConnectionClosedError
from wsfleet.localfleet import procs

FLEET = {
    "apiVersion": "wsfleet.io/v1alpha1",
    "kind": "WebSocketFleet",
    "metadata": {"name": "cli-test"},
    "spec": {
        "replicas": {"min": 2, "max": 3},
        "targets": {"switchLatencyP95Ms": None},
        "forecast": {"enabled": True},  # the operator's forecaster runs too (no history yet)
    },
}


def prometheus_targets(url: str) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"{url}/api/v1/targets", timeout=5) as resp:
        data = json.load(resp)
    active: list[dict[str, object]] = data["data"]["activeTargets"]
    return active


def _fleet_ticked(dashboard_url: str) -> dict[str, object] | None:
    with urllib.request.urlopen(f"{dashboard_url}api/fleets", timeout=5) as resp:
        payload = json.load(resp)
    for fleet in payload["fleets"]:
        if fleet["name"] == "cli-test" and fleet.get("current_replicas") is not None:
            found: dict[str, object] = fleet
            return found
    return None


async def read_until(stream: asyncio.StreamReader, marker: str, timeout_s: float) -> str:
    text = ""
    async with asyncio.timeout(timeout_s):
        while marker not in text:
            line = await stream.readline()
            if not line:
                raise AssertionError(f"output ended before {marker!r}:\n{text}")
            text += line.decode()
    return text


async def start_up(tmp_path: Path) -> asyncio.subprocess.Process:
    """`wsfleet up` on a test manifest, in its own process group as in a terminal."""
    manifest = tmp_path / "fleet.yaml"
    manifest.write_text(yaml.safe_dump(FLEET))
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wsfleet",
        "up",
        "-f",
        str(manifest),
        "--port",
        "0",
        "--interval",
        "1",
        "--dashboard-port",
        "0",
        "--workdir",
        str(tmp_path / "work"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
async def test_up_runs_the_manifest_and_a_signal_leaves_nothing_running(
    tmp_path: Path, sig: signal.Signals
) -> None:
    proc = await start_up(tmp_path)
    assert proc.stdout is not None
    children: set[int] = set()
    try:
        summary = await read_until(proc.stdout, "Ready. Stop with Ctrl-C.", 120.0)
        ws_url = re.search(r"WebSocket\s+(ws://\S+)", summary)
        prom_url = re.search(r"Prometheus\s+(http://\S+)", summary)
        admins = re.findall(r"admin (http://\S+)", summary)
        assert ws_url, summary
        assert prom_url, summary
        assert len(admins) == 2, summary  # min replicas, each with its own admin port
        children = procs.descendants_of(proc.pid)
        assert len(children) >= 5, "redis, prometheus, the reaper and two gateways"
        token = re.search(r"Dev token\s+(\S+)", summary)
        assert token, summary
        with pytest.raises(ConnectionClosedError) as refused:
            await Client.connect(ws_url.group(1))  # JWT auth is on
        assert refused.value.code == 4001
        client = await Client.connect(ws_url.group(1), token.group(1))
        assert client.welcome is not None
        assert client.welcome.node in {"gw-1", "gw-2"}
        await client.close()
        # the operator's dashboard shows this fleet as the autoscaler sees it
        dashboard = re.search(r"Dashboard\s+(http://\S+)", summary)
        assert dashboard, summary
        fleets = await wait_until(
            lambda: _fleet_ticked(dashboard.group(1)), timeout_s=60, message="dashboard"
        )
        assert fleets["current_replicas"] == 2, fleets
        # Prometheus found both gateways through file_sd and scrapes them
        await wait_until(
            lambda: (
                sorted(
                    t["labels"]["pod"]  # type: ignore[index]
                    for t in prometheus_targets(prom_url.group(1))
                    if t["health"] == "up"
                )
                == ["gw-1", "gw-2"]
            ),
            timeout_s=60,
            message="both gateways up in Prometheus",
        )
    finally:
        if proc.returncode is None:
            # Ctrl-C in a terminal signals the whole foreground process group
            if sig is signal.SIGINT:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        rest = await asyncio.wait_for(proc.stdout.read(), 90.0)
        code = await asyncio.wait_for(proc.wait(), 30.0)
    assert code == 0, rest
    assert "stopped: nothing left running" in rest.decode()
    left = {pid for pid in children if procs.parent_of(pid) is not None}
    assert not left, f"still running after {sig.name}: {left}"


async def test_up_killed_with_sigkill_still_leaves_nothing_running(tmp_path: Path) -> None:
    """No cleanup code runs on SIGKILL: gateways and the reaper are tied to `up` by the
    kernel's parent-death signal, and the reaper stops Redis and Prometheus."""
    proc = await start_up(tmp_path)
    assert proc.stdout is not None
    try:
        await read_until(proc.stdout, "Ready. Stop with Ctrl-C.", 120.0)
        children = procs.descendants_of(proc.pid)
        assert len(children) >= 5, "redis, prometheus, the reaper and two gateways"
    finally:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.wait(), 30.0)
    await wait_until(
        lambda: not {pid for pid in children if procs.parent_of(pid) is not None},
        timeout_s=90,
        message="every child of the killed `wsfleet up` gone",
    )
