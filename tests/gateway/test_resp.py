"""`backends/redis/resp.py` and `url.py`: Redis URLs, the handshake (AUTH, SELECT,
TLS, Unix sockets) and the connection's reply handling, against real redis-servers."""

from __future__ import annotations

import asyncio
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import astuple
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.exceptions import AuthenticationError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from wsfleet_gateway.backends.redis.broker import RedisBroker
from wsfleet_gateway.backends.redis.pool import make_client
from wsfleet_gateway.backends.redis.resp import (
    Endpoint,
    Request,
    open_connection,
    pack_resp,
    reply_error,
)
from wsfleet_gateway.backends.redis.url import parse_url
from wsfleet_gateway.broker import BrokerUnavailableError

from tests.support.certs import write_certs
from tests.support.waiting import wait_until
from wsfleet.services import RedisServer, free_port

PASSWORD = "s3cret/with:odd@chars"


# -- URLs and errors (pure) -------------------------------------------------


def test_urls_give_where_and_how_to_connect() -> None:
    plain = Endpoint.from_url("redis://127.0.0.1:6380/2")
    assert (plain.host, plain.port, plain.db, plain.password, plain.tls) == (
        "127.0.0.1",
        6380,
        2,
        None,
        None,
    )
    auth = Endpoint.from_url("redis://user:p%40ss@redis/0")
    assert (auth.host, auth.port, auth.username, auth.password) == ("redis", 6379, "user", "p@ss")
    only_password = Endpoint.from_url("redis://:pw@h")
    assert (only_password.username, only_password.password) == (None, "pw")
    unix = Endpoint.from_url("unix:///run/redis.sock?db=3")
    assert (unix.path, unix.db) == ("/run/redis.sock", 3)
    tls = Endpoint.from_url("rediss://h:1?ssl_cert_reqs=none")
    assert tls.tls is not None
    assert tls.tls.verify_mode == ssl.CERT_NONE
    assert not tls.tls.check_hostname
    strict = Endpoint.from_url("rediss://h")
    assert strict.tls is not None
    assert strict.tls.verify_mode == ssl.CERT_REQUIRED
    assert strict.tls.check_hostname
    assert "p@ss" not in repr(auth)
    assert "pw" not in repr(only_password)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h:1", "scheme"),
        ("unix://", "socket path"),
        ("rediss://h?ssl_cert_reqs=sometimes", "ssl_cert_reqs"),
    ],
)
def test_bad_urls_are_refused_clearly(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Endpoint.from_url(url)


def test_error_replies_map_to_their_kinds() -> None:
    assert type(reply_error("NOSCRIPT No matching script")) is NoScriptError
    assert type(reply_error("WRONGPASS invalid username-password pair")) is AuthenticationError
    assert type(reply_error("NOAUTH Authentication required.")) is AuthenticationError
    assert type(reply_error("ERR unknown command")) is ResponseError


@given(st.lists(st.one_of(st.text(), st.integers()), min_size=1, max_size=8))
def test_commands_pack_as_redis_reads_them(args: list[str | int]) -> None:
    import hiredis

    reader = hiredis.Reader(encoding="utf-8")
    reader.feed(pack_resp(tuple(args)))
    assert reader.gets() == [str(a) for a in args]  # a request is an array of bulk strings


# -- the handshake, against real servers --------------------------------------


async def test_auth_and_select_from_the_url() -> None:
    with RedisServer(extra_args=["--requirepass", PASSWORD]) as server:
        url = f"redis://:{PASSWORD.replace('/', '%2F').replace('@', '%40')}@127.0.0.1:{server.port}"
        conn = await open_connection(Endpoint.from_url(url + "/3"))
        try:
            assert await conn.call("SET", "where", "db3") == "OK"
            info = await conn.call("CLIENT", "INFO")
            assert " db=3 " in f" {info} "
        finally:
            conn.abort()
        with pytest.raises(AuthenticationError):
            await open_connection(Endpoint.from_url(f"redis://:wrong@127.0.0.1:{server.port}"))
        unauthenticated = await open_connection(Endpoint.from_url(server.url))
        try:
            with pytest.raises(AuthenticationError):
                await unauthenticated.call("GET", "where")
        finally:
            unauthenticated.abort()


async def test_a_broker_with_a_wrong_password_is_unavailable_and_says_why() -> None:
    with RedisServer(extra_args=["--requirepass", PASSWORD]) as server:
        broker = RedisBroker(f"redis://:wrong@127.0.0.1:{server.port}/0", op_timeout_s=0.5)
        await broker.start(lambda _: None)
        try:
            assert not broker.available
            with pytest.raises(BrokerUnavailableError, match="AuthenticationError") as err:
                await broker.publish("c", "1")
            assert "wrong" not in str(err.value)  # the password is never in the message
        finally:
            await broker.close()


async def test_a_unix_socket() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sock = Path(tmp) / "redis.sock"
        with RedisServer(extra_args=["--unixsocket", str(sock), "--unixsocketperm", "700"]):
            conn = await open_connection(Endpoint.from_url(f"unix://{sock}?db=1"))
            try:
                assert await conn.call("ECHO", "over a socket") == "over a socket"
            finally:
                conn.abort()


@pytest.fixture(scope="module")
def tls_redis() -> Iterator[tuple[int, Path]]:
    """A redis-server speaking only TLS: (port, CA file)."""
    with tempfile.TemporaryDirectory() as tmp:
        ca, cert, key = astuple(write_certs(Path(tmp)))
        port = free_port()
        tls_args = ["--tls-port", str(port), "--port", "0", "--tls-auth-clients", "no"]
        files = ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
        with RedisServer(port=port, extra_args=[*tls_args, *files, "--tls-ca-cert-file", str(ca)]):
            yield port, ca


async def test_tls_with_the_servers_ca(tls_redis: tuple[int, Path]) -> None:
    port, ca = tls_redis
    conn = await open_connection(Endpoint.from_url(f"rediss://127.0.0.1:{port}?ssl_ca_certs={ca}"))
    try:
        assert await conn.call("ECHO", "encrypted") == "encrypted"
    finally:
        conn.abort()


async def test_tls_refuses_a_server_it_cannot_verify(tls_redis: tuple[int, Path]) -> None:
    port, _ = tls_redis
    with pytest.raises(RedisConnectionError, match="cannot connect"):
        await open_connection(Endpoint.from_url(f"rediss://127.0.0.1:{port}"))  # system CAs
    unverified = await open_connection(
        Endpoint.from_url(f"rediss://127.0.0.1:{port}?ssl_cert_reqs=none")
    )
    try:
        assert await unverified.call("PING") == "PONG"
    finally:
        unverified.abort()


async def test_nothing_listening_is_a_connection_error() -> None:
    with pytest.raises(RedisConnectionError, match="cannot connect"):
        await open_connection(Endpoint(port=free_port()))


# -- replies -------------------------------------------------------------------


async def test_replies_in_order_and_pushes_to_the_handler(redis_server: RedisServer) -> None:
    pushed: list[Any] = []
    sub = await open_connection(Endpoint.from_url(redis_server.url), on_push=pushed.append)
    pub = await open_connection(Endpoint.from_url(redis_server.url))
    try:
        sub.send(pack_resp(("SUBSCRIBE", "c1")))
        await wait_until(lambda: pushed == [["subscribe", "c1", 1]], 5.0, message="confirmed")
        assert await pub.call("PUBLISH", "c1", "caf\u00e9") == 1
        await wait_until(lambda: len(pushed) == 2, 5.0, message="the message")
        assert pushed[1] == ["message", "c1", "caf\u00e9"]
    finally:
        sub.abort()
        pub.abort()
    await sub.lost
    assert sub.error is not None
    assert not sub.is_open


async def test_bytes_that_are_not_utf8_do_not_break_the_connection(
    redis_server: RedisServer,
) -> None:
    import redis

    raw = redis.Redis.from_url(redis_server.url)  # bytes in, bytes out
    raw.set("not-utf8", b"ok \xff\xfe")
    raw.close()
    conn = await open_connection(Endpoint.from_url(redis_server.url))
    try:
        assert await conn.call("GET", "not-utf8") == "ok \ufffd\ufffd"
        assert await conn.call("PING") == "PONG"
    finally:
        conn.abort()


async def test_a_reply_nobody_asked_for_closes_the_connection(
    redis_server: RedisServer,
) -> None:
    conn = await open_connection(Endpoint.from_url(redis_server.url))  # no push handler
    conn.send(pack_resp(("PING",)))  # a reply no request waits for
    await asyncio.wait_for(conn.lost, 5.0)
    assert "nobody asked" in str(conn.error)
    with pytest.raises(RedisConnectionError, match="closed"):
        await conn.call("PING")


async def test_a_protocol_error_fails_what_waits_and_closes() -> None:
    async def garbage(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"?this is not RESP\r\n")
        await writer.drain()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        conn = await open_connection(Endpoint(port=port))
        request = Request(("PING",), asyncio.get_running_loop().create_future())
        conn.send(pack_resp(request.args), [request])
        with pytest.raises(RedisConnectionError, match="protocol error"):
            await request.reply
        await asyncio.wait_for(conn.lost, 5.0)
    finally:
        server.close()
        await server.wait_closed()


async def test_a_connection_closed_by_the_server_fails_what_waits(
    redis_server: RedisServer,
) -> None:
    conn = await open_connection(Endpoint.from_url(redis_server.url))
    waiting = asyncio.ensure_future(conn.call("BLPOP", "nothing", 10))
    killer = await open_connection(Endpoint.from_url(redis_server.url))
    try:
        await wait_until(lambda: conn.pending == 1, 5.0, message="written")
        await wait_until(
            lambda: killer.call("CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal"),
            5.0,
            message="killed",
        )
        with pytest.raises(RedisConnectionError, match="closed the connection"):
            await waiting
        assert isinstance(conn.error, RedisConnectionError)
    finally:
        killer.abort()


# -- one URL reader for both clients ---------------------------------------------


def test_one_reading_of_a_url_for_both_clients() -> None:
    target = parse_url("rediss://me:p%40ss@cache.example:6390/4?ssl_ca_certs=/ca.pem")
    kwargs = target.redis_py_kwargs()
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.example", 6390, 4)
    assert (kwargs["username"], kwargs["password"]) == ("me", "p@ss")
    assert kwargs["connection_class"].__name__ == "SSLConnection"
    assert (kwargs["ssl_ca_certs"], kwargs["ssl_cert_reqs"]) == ("/ca.pem", "required")
    endpoint = Endpoint.from_url("rediss://me:p%40ss@cache.example:6390/4?ssl_cert_reqs=none")
    assert (endpoint.host, endpoint.port, endpoint.db) == ("cache.example", 6390, 4)
    unix = parse_url("unix://:pw@/run/redis.sock?db=2").redis_py_kwargs()
    assert (unix["path"], unix["db"], unix["password"]) == ("/run/redis.sock", 2, "pw")
    assert unix["connection_class"].__name__ == "UnixDomainSocketConnection"
    assert "p@ss" not in repr(target)
    with pytest.raises(ValueError, match="database is a number"):
        parse_url("redis://h/zero")


async def agree(url: str) -> None:
    """The broker's connection writes, redis-py (the cache's client) reads: one server, one
    database, one set of credentials, from one URL."""
    own = await open_connection(Endpoint.from_url(url))
    client = make_client(url, timeout_s=5.0, pool_size=1)
    try:
        assert await own.call("SET", "agree", url[:8]) == "OK"
        assert await client.get("agree") == url[:8]
        assert await client.client_info() is not None
    finally:
        own.abort()
        await client.aclose()


async def test_both_clients_reach_the_same_database_with_the_same_password() -> None:
    with RedisServer(extra_args=["--requirepass", PASSWORD]) as server:
        secret = PASSWORD.replace("/", "%2F").replace("@", "%40")
        await agree(f"redis://:{secret}@127.0.0.1:{server.port}/5")
        bad = make_client(f"redis://:wrong@127.0.0.1:{server.port}/5", 5.0, 1)
        try:
            with pytest.raises(AuthenticationError):
                await bad.get("agree")
        finally:
            await bad.aclose()


async def test_both_clients_over_a_unix_socket() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sock = Path(tmp) / "redis.sock"
        with RedisServer(extra_args=["--unixsocket", str(sock), "--unixsocketperm", "700"]):
            await agree(f"unix://{sock}?db=6")


async def test_both_clients_over_tls(tls_redis: tuple[int, Path]) -> None:
    port, ca = tls_redis
    await agree(f"rediss://127.0.0.1:{port}/7?ssl_ca_certs={ca}")
    await agree(f"rediss://127.0.0.1:{port}/7?ssl_cert_reqs=none")
    unverified = make_client(f"rediss://127.0.0.1:{port}/7", 5.0, 1)  # system CAs: refused
    try:
        with pytest.raises(RedisConnectionError):
            await unverified.get("agree")
    finally:
        await unverified.aclose()
