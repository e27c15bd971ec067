"""docs/protocol.md and the gateway agree: replay every example against a live gateway."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from wsfleet_gateway.app import Gateway
from wsfleet_gateway.backends.memory import MemoryBroker
from wsfleet_gateway.protocol import ERROR_CODES
from wsfleet_gateway.server import CLOSE_CODES

from tests.gateway.helpers import API_KEY, make_settings
from tests.support.waiting import wait_until
from wsfleet.client import Client

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
BLOCK_RE = re.compile(r"^```(wsfleet-example|admin-example)\n(.*?)^```", re.S | re.M)
EXACT = {"type", "id", "channel", "from", "code", "data", "meta", "recovered", "message"}


@dataclass
class Step:
    send: str | None
    expect: list[Any] = field(default_factory=list)


def parse_ws_block(text: str) -> list[Step]:
    steps = [Step(None)]
    for line in text.splitlines():
        if line.startswith("> "):
            steps.append(Step(line[2:]))
        elif line.startswith("< "):
            steps[-1].expect.append(json.loads(line[2:]))
        elif line.strip():
            raise AssertionError(f"unexpected line in example: {line!r}")
    return steps


def blocks() -> list[tuple[str, str]]:
    found = [(m.group(1), m.group(2)) for m in BLOCK_RE.finditer(DOC.read_text())]
    assert found, "no examples found in docs/protocol.md"
    return found


def assert_same_shape(expected: Any, got: Any, path: str = "$") -> None:
    """Same keys and JSON types everywhere; exact values for the EXACT keys."""
    if isinstance(expected, dict):
        assert isinstance(got, dict), f"{path}: expected an object, got {got!r}"
        assert set(got) == set(expected), f"{path}: keys {sorted(got)} != {sorted(expected)}"
        for key, value in expected.items():
            if key in EXACT:
                assert got[key] == value, f"{path}.{key}: {got[key]!r} != {value!r}"
            else:
                assert_same_shape(value, got[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list), f"{path}: expected a list, got {got!r}"
        assert len(got) == len(expected), f"{path}: {len(got)} items != {len(expected)}"
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            assert_same_shape(e, g, f"{path}[{i}]")
    else:
        assert type(got) is type(expected), f"{path}: {got!r} is not like {expected!r}"


def test_doc_lists_every_op_and_frame_type() -> None:
    text = DOC.read_text()
    sent = {
        json.loads(line[2:]).get("op")
        for kind, body in blocks()
        if kind == "wsfleet-example"
        for line in body.splitlines()
        if line.startswith('> {"')
    }
    assert sent >= {"subscribe", "unsubscribe", "switch", "publish", "ping"}
    for frame_type in (
        "welcome",
        "subscribed",
        "unsubscribed",
        "switched",
        "published",
        "pong",
        "message",
        "error",
        "reconnect",
    ):
        assert f'"type": "{frame_type}"' in text, frame_type
    for code in (
        "bad_request",
        "forbidden",
        "quota_exceeded",
        "rate_limited",
        "not_subscribed",
        "unavailable",
        "too_large",
    ):
        assert f"`{code}`" in text, code


def table_keys(heading: str) -> set[str]:
    """First-column values of the table under `heading` in docs/protocol.md."""
    section = DOC.read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return {row.split("|")[1].strip().strip("`") for row in rows[2:]}  # skip header, rule


def test_doc_tables_match_the_code() -> None:
    assert table_keys("Close codes") == {str(code) for code in CLOSE_CODES}
    assert table_keys("`error`") == set(ERROR_CODES)
    settings = make_settings()
    welcome = json.loads(Gateway(settings, broker=MemoryBroker()).ws.welcome("c-1"))
    assert table_keys("Connect: `welcome`") == set(welcome["limits"])


async def test_replay_doc_examples() -> None:
    gw = Gateway(make_settings(node_name="gw-a"), broker=MemoryBroker())
    await gw.start()
    try:
        async with aiohttp.ClientSession() as http:
            for kind, body in blocks():
                if kind == "wsfleet-example":
                    await replay_ws(gw, body)
                else:
                    await replay_admin(gw, http, body)
    finally:
        await gw.stop()


async def replay_ws(gw: Gateway, body: str) -> None:
    client = await Client.connect(gw.ws_url, record_frames=True)
    log = client.frame_log
    assert log is not None
    try:
        seen = 1  # the welcome
        for step in parse_ws_block(body):
            if step.send is None:  # the frames the server sends first
                got = log[:1] if step.expect else []
            else:
                client.send_raw(step.send)
                want = seen + len(step.expect)
                await wait_until(lambda w=want: len(log) >= w, message=f"replies to {step.send}")
                got = log[seen:want]
                seen = want
            assert len(got) == len(step.expect)
            for expected in step.expect:
                matches = [g for g in got if g.get("type") == expected["type"]]
                assert matches, f"no {expected['type']} frame for {step.send}: {got}"
                assert_same_shape(expected, matches[0])
                got.remove(matches[0])
        await client.ping()  # nothing unexpected arrived in between
        assert len(log) == seen + 1
    finally:
        await client.close()


async def replay_admin(gw: Gateway, http: aiohttp.ClientSession, body: str) -> None:
    lines = [line for line in body.splitlines() if line.strip()]
    assert len(lines) == 2, body
    method, path, payload = lines[0].split(" ", 2)
    status, expected = lines[1][2:].split(" ", 1)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with http.request(method, gw.admin_url + path, data=payload, headers=headers) as response:
        assert response.status == int(status)
        assert_same_shape(json.loads(expected), await response.json())


@pytest.mark.parametrize(
    ("expected", "got"),
    [
        ({"a": 1}, {"a": 1, "b": 2}),
        ({"a": 1}, {"a": "1"}),
        ({"type": "x"}, {"type": "y"}),
        ([1], []),
        ({"l": [1]}, {"l": 1}),
    ],
)
def test_shape_check_catches_differences(expected: Any, got: Any) -> None:
    with pytest.raises(AssertionError):
        assert_same_shape(expected, got)
