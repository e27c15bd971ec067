"""``wsfleet gateway`` as a real process: ready line, clients, SIGTERM, exit 0."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from wsfleet_gateway.cli import settings_from_args

from tests.support.waiting import wait_until
from wsfleet.cli import build_parser
from wsfleet.client import Client

ROOT = Path(__file__).resolve().parents[2]


class GatewayProcess:
    """A `wsfleet gateway` child process with its stdout lines collected."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        command = [sys.executable, "-m", "wsfleet", "gateway", *args]
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "WSFLEET_AUTH": "disabled", **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in list(self.lines):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and obj.get("event") == name:
                out.append(obj)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self._reader.join(timeout=5)


@pytest.fixture
def gateway_process() -> Iterator[list[GatewayProcess]]:
    started: list[GatewayProcess] = []
    yield started
    for process in started:
        process.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_gateway_process_ready_serves_and_exits_cleanly(
    gateway_process: list[GatewayProcess], sig: signal.Signals
) -> None:
    # port 0: the gateway binds a free port itself and says which (a port picked here
    # and bound later can be taken by another process in between)
    process = GatewayProcess(
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--admin-port",
        "0",
        env={"WSFLEET_PORT": "1", "WSFLEET_NODE_NAME": "cli-node", "WSFLEET_DRAIN_GRACE_S": "1"},
    )
    gateway_process.append(process)
    ready = await wait_until(
        lambda: process.events("gateway_ready") or process.proc.poll() is not None,
        timeout_s=60,
        message="gateway_ready log line",
    )
    assert isinstance(ready, list), "".join(process.lines)
    assert len(ready) == 1
    ws = urlsplit(ready[0]["ws"])
    admin = urlsplit(ready[0]["admin"])
    assert (ws.scheme, ws.hostname, ws.path) == ("ws", "127.0.0.1", "/ws")
    assert ws.port not in (None, 0, 1)  # the flag (0: any free port) beats WSFLEET_PORT=1
    assert (admin.scheme, admin.hostname) == ("http", "127.0.0.1")
    assert admin.port not in (None, 0, ws.port)
    assert ready[0]["node"] == "cli-node"
    client = await Client.connect(ready[0]["ws"], follow_reconnect=False)
    try:
        await client.subscribe("cli")
        offset = await client.publish("cli", "hello")
        assert (await client.next_message()).offset == offset
        process.proc.send_signal(sig)
        await wait_until(lambda: not client.connected, timeout_s=30, message="closed by server")
        assert client.close_code == 1001
        code = await wait_until(lambda: process.proc.poll() is not None, timeout_s=30)
        assert code
        assert process.proc.returncode == 0, "".join(process.lines)
        assert process.events("gateway_stopped")
    finally:
        await client.close()


def test_flags_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSFLEET_HOST", "0.0.0.0")
    monkeypatch.setenv("WSFLEET_PORT", "1234")
    monkeypatch.setenv("WSFLEET_REDIS_URL", "redis://env:6379/0")
    args = build_parser().parse_args(
        ["gateway", "--port", "4321", "--admin-port", "0", "--reuse-port"]
    )
    assert isinstance(args, argparse.Namespace)
    settings = settings_from_args(args)
    assert settings.host == "0.0.0.0"  # from env: no flag given
    assert settings.port == 4321
    assert settings.admin_port == 0
    assert settings.redis_url == "redis://env:6379/0"
    assert settings.reuse_port is True
    args = build_parser().parse_args(["gateway", "--redis-url", "redis://flag:1/0"])
    assert settings_from_args(args).redis_url == "redis://flag:1/0"


async def test_second_signal_cuts_the_drain_short(gateway_process: list[GatewayProcess]) -> None:
    process = GatewayProcess(
        "--port", "0", "--admin-port", "0", env={"WSFLEET_DRAIN_GRACE_S": "600"}
    )
    gateway_process.append(process)
    ready = await wait_until(
        lambda: process.events("gateway_ready") or process.proc.poll() is not None, timeout_s=60
    )
    assert isinstance(ready, list), "".join(process.lines)
    client = await Client.connect(ready[0]["ws"], follow_reconnect=False, record_frames=True)
    try:
        await client.subscribe("stay")
        process.proc.send_signal(signal.SIGTERM)
        await wait_until(lambda: process.events("drain_started"), timeout_s=30)
        log = client.frame_log
        assert log is not None
        await wait_until(lambda: any(f["type"] == "reconnect" for f in log), timeout_s=30)
        assert client.connected  # ignoring the hint: the drain would wait 600 s
        process.proc.send_signal(signal.SIGTERM)
        await wait_until(lambda: process.proc.poll() is not None, timeout_s=30)
        assert process.proc.returncode == 0, "".join(process.lines)
        assert client.close_code == 1001
    finally:
        await client.close()


def test_settings_from_env_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError
    from wsfleet_gateway.settings import GatewaySettings

    monkeypatch.setenv("WSFLEET_API_KEY", "")
    monkeypatch.setenv("WSFLEET_HISTORY_RECENT", "3")
    monkeypatch.setenv("WSFLEET_LOG_JSON", "false")
    settings = GatewaySettings()
    assert settings.api_key_value is None  # empty key = no key: writes refused
    assert settings.history_recent == 3
    assert settings.log_json is False
    secret = "s3cr3t-key"
    assert GatewaySettings(api_key=secret).api_key_value == secret
    assert secret not in repr(GatewaySettings(api_key=secret))
    with pytest.raises(ValidationError, match="idle_timeout_s"):
        GatewaySettings(heartbeat_s=30, idle_timeout_s=30)
    for name, field in GatewaySettings.model_fields.items():
        assert field.description, f"{name} has no docstring"
