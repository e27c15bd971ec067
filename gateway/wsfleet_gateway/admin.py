"""The admin HTTP API (aiohttp) on the admin port.

- ``POST /api/publish`` ``{"channel", "data"}`` → ``{"channel", "offset"}``
- ``PUT /api/channels/{name}/meta`` (any JSON object) → ``{"channel", "meta"}``
- ``POST /api/prewarm`` ``{"channels": [...]}`` → ``{"requested", "loaded"}``:
  load those channels into the L1 cache (the operator calls it before a peak)
- ``GET /api/channels/{name}/presence`` → ``{"channel", "members", "connections",
  "users"}``: who is on the channel, fleet-wide (needs the API key: it names users)
- ``GET /healthz`` (process alive), ``GET /readyz`` (503 while the broker is
  unavailable or the gateway drains or stops), ``GET /metrics`` (Prometheus).

Writes (and the presence read) need ``Authorization: Bearer <WSFLEET_API_KEY>``;
with no key configured every one is refused (401). Errors are JSON
``{"error": code, "message": ...}`` with the wire protocol's codes.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from wsfleet_gateway.broker import (
    BadRequestError,
    Broker,
    BrokerUnavailableError,
    PresenceStore,
    encode_data,
)
from wsfleet_gateway.layer import ProtectionLayer
from wsfleet_gateway.metrics import GatewayMetrics
from wsfleet_gateway.presence import count_members, live_members
from wsfleet_gateway.protocol import (
    BAD_REQUEST,
    TOO_LARGE,
    UNAVAILABLE,
    decode_strict_json,
    validate_channel,
)
from wsfleet_gateway.settings import GatewaySettings


class Gateway(Protocol):
    """What the admin API uses of a gateway (`app.Gateway` is one): the app builds the
    admin API, so the admin API names only this, never the app."""

    settings: GatewaySettings
    metrics: GatewayMetrics
    store: Broker
    protection: ProtectionLayer | None
    presence: PresenceStore | None

    @property
    def connections(self) -> int: ...

    def readiness(self) -> dict[str, bool]: ...

    def readiness_detail(self) -> dict[str, object]: ...


GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("gateway")
MAX_PREWARM = 10_000
"""Most channels one ``POST /api/prewarm`` may name."""


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def _authorized(request: web.Request, api_key: str | None) -> bool:
    if api_key is None:
        return False
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), api_key)


async def _read_json(request: web.Request, limit: int) -> Any:
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise web.HTTPRequestEntityTooLarge(
            max_size=limit,
            actual_size=len(body),
            text=json.dumps({"error": TOO_LARGE, "message": f"body over {limit} bytes"}),
            content_type="application/json",
        )
    try:
        return decode_strict_json(body.decode())  # strict UTF-8, no NaN or Infinity
    except (ValueError, RecursionError) as exc:
        message = "body is not valid JSON"
        if isinstance(exc, UnicodeDecodeError):
            message = "body is not valid UTF-8"
        elif isinstance(exc, RecursionError):
            message = "body is nested too deeply"
        raise web.HTTPBadRequest(
            text=json.dumps({"error": BAD_REQUEST, "message": message}),
            content_type="application/json",
        ) from None


def _write_guard(
    handler: Callable[[web.Request, Gateway], Any],
) -> Callable[[web.Request], Any]:
    async def guarded(request: web.Request) -> web.StreamResponse:
        gateway = request.app[GATEWAY_KEY]
        if not _authorized(request, gateway.settings.api_key_value):
            gateway.metrics.reject("unauthorized")
            return _error(401, "unauthorized", "missing or wrong Authorization: Bearer <api key>")
        try:
            async with asyncio.timeout(gateway.settings.redis_timeout_s * 3 + 1.0):
                response: web.StreamResponse = await handler(request, gateway)
                return response
        except BadRequestError as exc:
            gateway.metrics.reject(BAD_REQUEST)
            return _error(400, BAD_REQUEST, str(exc))
        except (BrokerUnavailableError, TimeoutError) as exc:
            gateway.metrics.reject(UNAVAILABLE)
            return _error(503, UNAVAILABLE, f"message store unavailable: {exc or 'timeout'}")

    return guarded


async def _publish(request: web.Request, gateway: Gateway) -> web.Response:
    body = await _read_json(request, gateway.settings.max_message_bytes)
    if not isinstance(body, dict) or "channel" not in body or "data" not in body:
        return _error(400, BAD_REQUEST, 'body must be {"channel": ..., "data": ...}')
    try:
        channel = validate_channel(body["channel"])
    except ValueError as exc:
        return _error(400, BAD_REQUEST, str(exc))
    data_json = encode_data(body["data"])  # BadRequestError: 400, as on the WebSocket
    delivery = await gateway.store.publish(channel, data_json)
    gateway.metrics.messages.inc()
    return web.json_response({"channel": channel, "offset": delivery.offset})


async def _set_meta(request: web.Request, gateway: Gateway) -> web.Response:
    try:
        channel = validate_channel(request.match_info["name"])
    except ValueError as exc:
        return _error(400, BAD_REQUEST, str(exc))
    body = await _read_json(request, gateway.settings.max_message_bytes)
    if not isinstance(body, dict):
        return _error(400, BAD_REQUEST, "channel metadata must be a JSON object")
    encode_data(body, "the metadata")  # BadRequestError: 400
    await gateway.store.set_meta(channel, body)
    return web.json_response({"channel": channel, "meta": body})


async def _presence(request: web.Request, gateway: Gateway) -> web.Response:
    try:
        channel = validate_channel(request.match_info["name"])
    except ValueError as exc:
        return _error(400, BAD_REQUEST, str(exc))
    if gateway.presence is None:
        return _error(409, BAD_REQUEST, "presence is off (WSFLEET_PRESENCE=false)")
    members = live_members(await gateway.presence.presence_read(channel))
    connections, users = count_members(members)
    return web.json_response(
        {
            "channel": channel,
            "members": [member.wire() for member in members],
            "connections": connections,
            "users": users,
        }
    )


async def _prewarm(request: web.Request, gateway: Gateway) -> web.Response:
    body = await _read_json(request, gateway.settings.max_message_bytes)
    channels = body.get("channels") if isinstance(body, dict) else None
    if not isinstance(channels, list) or len(channels) > MAX_PREWARM:
        return _error(
            400, BAD_REQUEST, f'body must be {{"channels": [...]}} with at most {MAX_PREWARM}'
        )
    try:
        names = [validate_channel(c) for c in channels]
    except ValueError as exc:
        return _error(400, BAD_REQUEST, str(exc))
    if gateway.protection is None:
        return _error(409, BAD_REQUEST, "the channel cache is off (WSFLEET_PROTECTION=false)")
    loaded = await gateway.protection.cache.prewarm(names)
    return web.json_response({"requested": len(names), "loaded": loaded})


async def _healthz(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    return web.json_response(
        {"status": "ok", "node": gateway.settings.node_name, "connections": gateway.connections}
    )


async def _readyz(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    checks = gateway.readiness()
    ready = all(checks.values())
    return web.json_response(
        {
            "ready": ready,
            "node": gateway.settings.node_name,
            "checks": checks,
            "detail": gateway.readiness_detail(),
        },
        status=200 if ready else 503,
    )


async def _metrics(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    response = web.Response(body=gateway.metrics.render())
    response.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
    return response


def build_admin_app(gateway: Gateway) -> web.Application:
    app = web.Application(client_max_size=gateway.settings.max_message_bytes + 1024)
    app[GATEWAY_KEY] = gateway
    app.router.add_post("/api/publish", _write_guard(_publish))
    app.router.add_put("/api/channels/{name}/meta", _write_guard(_set_meta))
    app.router.add_get("/api/channels/{name}/presence", _write_guard(_presence))
    app.router.add_post("/api/prewarm", _write_guard(_prewarm))
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    return app
