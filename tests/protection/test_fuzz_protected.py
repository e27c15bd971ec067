"""Fuzz a protected gateway: random and oversized frames, bad, expired and wrong-channel
tokens, and the issue-17 corpus (``tests/gateway/fuzz_corpus.py``). Every case ends in a
clear error or close code; afterwards nothing is left over (connections, sessions,
admissions, workers, asyncio tasks) and the gateway still serves."""

from __future__ import annotations

import asyncio
import json
import os
import random
import struct

from wsfleet_gateway.protocol import ERROR_CODES

from tests.gateway.fuzz_corpus import CORPUS
from tests.protection.support import RawClient, frame_bytes, protected_settings, running, token
from tests.support.waiting import wait_until
from wsfleet.client import Client
from wsfleet.services import RedisServer

MAX_MESSAGE = 4096
CLOSE_CODES = {1002, 1007, 1008, 1009}
CASES = 80
SEED = int(os.environ.get("WSFLEET_FUZZ_SEED", "4242"))


def random_token(rng: random.Random) -> tuple[str | None, str]:
    """A token and what the server should make of it."""
    kind = rng.choice(["good", "good", "good", "none", "garbage", "expired", "wrong-key"])
    if kind == "good":
        return token("fuzzer", ["allowed-*"], tier="free"), "good"
    if kind == "none":
        return None, "bad"
    if kind == "garbage":
        return "".join(rng.choice("abc.-_=") for _ in range(rng.randint(1, 400))), "bad"
    if kind == "expired":
        return token("fuzzer", ttl_s=-300), "bad"
    return token("fuzzer", key="k" * 40), "bad"


def random_frame(rng: random.Random) -> tuple[bytes, int, bool]:
    """``(payload, opcode, fin)``."""
    kind = rng.randrange(10)
    if kind == 0:
        return os.urandom(rng.randint(0, 300)), 0x1, True  # random bytes as text
    if kind == 1:
        return os.urandom(rng.randint(0, 300)), 0x2, True  # binary
    if kind == 2:
        return b"x" * (MAX_MESSAGE + rng.randint(1, 5000)), 0x1, True  # oversized
    if kind == 3:
        return os.urandom(20), 0x1, False  # a fragment that never ends...
    if kind == 4:
        return os.urandom(20), 0x0, True  # ...or a stray continuation
    if kind == 5:
        return b"", rng.choice([0x3, 0x4, 0xB]), True  # reserved opcodes
    if kind == 6:
        return rng.choice(CORPUS).frame, 0x1, True  # issue 17: each one a bad_request
    channel = rng.choice(["allowed-1", "forbidden-1", "$sys", "a b", "", "allowed-" + "x" * 300])
    op = rng.choice(["subscribe", "publish", "switch", "unsubscribe", "ping", "nope"])
    request = {"id": rng.randint(1, 10**6), "op": op, "channel": channel, "from": channel}
    request |= {"to": rng.choice(["allowed-2", "forbidden-2"]), "data": {"k": "v"}}
    return json.dumps(request).encode(), 0x1, True


def run_case(port: int, seed: int) -> str:
    """One connection's fuzz case (blocking); returns how it ended."""
    rng = random.Random(seed)
    tok, expect = random_token(rng)
    client = RawClient("127.0.0.1", port)
    try:
        head = client.handshake({"Authorization": f"Bearer {tok}"} if tok else {})
        assert head.startswith(b"HTTP/1.1 101"), head
        if expect == "bad":
            code = client.close_code()
            assert code == 4001, code
            return "4001"
        welcome = client.recv_json()
        assert welcome["type"] == "welcome"
        for _ in range(rng.randint(1, 6)):
            client.send_frame(*random_frame(rng))
        client.send_json({"id": "end", "op": "ping"})
        while True:
            opcode, payload = client.recv_frame()
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                assert code in CLOSE_CODES, code
                return str(code)
            if opcode != 0x1:
                continue
            frame = json.loads(payload)
            if frame["type"] == "error":
                assert frame["code"] in ERROR_CODES, frame
                if frame["code"] == "forbidden":
                    assert "forbidden" in frame["message"] or "allowed" in frame["message"]
            if frame["type"] == "pong" and frame.get("id") == "end":
                return "pong"
            if frame["type"] == "error" and frame.get("id") is None and "message" in frame:
                # a fragment swallowed our ping: ask again once the fragment state reset
                client.send_json({"id": "end", "op": "ping"})
    except (ConnectionError, TimeoutError, OSError) as exc:
        return f"dropped: {type(exc).__name__}"
    finally:
        client.close()


async def test_fuzzed_connections_get_clear_answers_and_leave_nothing_behind(
    redis_server: RedisServer,
) -> None:
    settings = protected_settings(
        redis_url=redis_server.url,
        max_message_bytes=MAX_MESSAGE,
        user_connects_per_min=10_000,
        auth_failures_per_ip_per_min=10_000,
    )
    async with running(settings) as gw:
        await wait_until(lambda: gw.ctx.workers == set(), timeout_s=10)
        tasks_before = len(asyncio.all_tasks())
        outcomes: dict[str, int] = {}
        for case in range(CASES):
            outcome = await asyncio.to_thread(run_case, gw.port, SEED + case)
            outcomes[outcome.split(":")[0]] = outcomes.get(outcome.split(":")[0], 0) + 1
        print(f"\nfuzz outcomes over {CASES} connections (seed {SEED}): {outcomes}")
        assert set(outcomes) <= {"4001", "pong", "dropped", *map(str, CLOSE_CODES)}
        assert outcomes.get("4001", 0) > 0
        assert outcomes.get("pong", 0) > 0
        assert outcomes.get("1009", 0) > 0
        await wait_until(
            lambda: (gw.connections, len(gw.ctx.sessions), len(gw.ws.admitting)) == (0, 0, 0),
            timeout_s=15,
            message="every fuzzed connection released",
        )
        await wait_until(lambda: not gw.ctx.workers, timeout_s=15)
        await wait_until(lambda: len(asyncio.all_tasks()) <= tasks_before, timeout_s=15)
        assert gw.hub.channel_count() == 0
        # still serving: a well-behaved client subscribes and publishes
        client = await Client.connect(gw.ws_url, token("after-fuzz", ["allowed-*"]))
        try:
            await client.subscribe("allowed-1")
            await client.publish("allowed-1", "still here")
            assert (await client.next_message(timeout_s=10)).data == "still here"
        finally:
            await client.close()


async def test_frames_sent_before_the_welcome_are_held_then_answered(
    shared_redis: RedisServer,
) -> None:
    """Frames in the same packet as the upgrade arrive while admission is pending."""
    async with running(protected_settings(redis_url=shared_redis.url)) as gw:
        headers = {"Authorization": f"Bearer {token('early-bird')}"}

        def early(pings: int) -> tuple[list[str], int | None]:
            client = RawClient("127.0.0.1", gw.port)
            try:
                burst = b"".join(
                    frame_bytes(json.dumps({"id": i, "op": "ping"}).encode()) for i in range(pings)
                )
                client.handshake(headers, then=burst)
                types = []
                while True:
                    opcode, payload = client.recv_frame()
                    if opcode == 0x8:
                        return types, struct.unpack("!H", payload[:2])[0]
                    types.append(json.loads(payload)["type"])
                    if len(types) == pings + 1:
                        return types, None
            finally:
                client.close()

        assert await asyncio.to_thread(early, 3) == (["welcome", "pong", "pong", "pong"], None)
        # more than may be held: refused with 1008 (policy), nothing answered
        assert await asyncio.to_thread(early, 200) == ([], 1008)
        await wait_until(lambda: gw.connections == 0, timeout_s=15)


async def test_the_issue_17_corpus_gets_bad_request_on_a_protected_gateway(
    shared_redis: RedisServer,
) -> None:
    """Each corpus frame on an authenticated connection: `bad_request`, why, the id when
    usable, the connection kept (a ping answered after them all)."""
    settings = protected_settings(redis_url=shared_redis.url, max_message_bytes=MAX_MESSAGE)
    async with running(settings) as gw:

        def replay() -> list[dict[str, object]]:
            client = RawClient("127.0.0.1", gw.port)
            try:
                head = client.handshake({"Authorization": f"Bearer {token('corpus')}"})
                assert head.startswith(b"HTTP/1.1 101"), head
                assert client.recv_json()["type"] == "welcome"
                for case in CORPUS:
                    client.send_frame(case.frame)
                client.send_json({"id": "end", "op": "ping"})
                answers = []
                while (frame := client.recv_json())["type"] != "pong":
                    answers.append(frame)
                return answers
            finally:
                client.close()

        answers = await asyncio.to_thread(replay)
        assert len(answers) == len(CORPUS)
        for case, answer in zip(CORPUS, answers, strict=True):
            assert (answer["code"], answer["id"]) == ("bad_request", case.rid), case.name
            assert case.fragment in str(answer["message"]), case.name
        assert gw.metrics.rejections.labels(reason="bad_request")._value.get() >= len(CORPUS)
