"""JWT authentication of WebSocket upgrades (HS256 or RS256, PyJWT).

A token comes in the ``Authorization: Bearer <jwt>`` header or the
``?token=<jwt>`` query parameter (browsers cannot set headers). Claims:
``sub`` (user, required), ``exp`` (required), ``tier`` (default
``settings.default_tier``), ``channels`` (list of glob patterns the user may
join; default none), optional ``aud``/``iss`` when configured.

Keys: ``WSFLEET_JWT_SECRET`` / ``WSFLEET_JWT_SECRET_FILE`` (HS256) or
``WSFLEET_JWT_PUBLIC_KEY_FILE`` / ``WSFLEET_JWT_PUBLIC_KEY`` (RS256, PEM).
`build_authenticator` refuses to start without a key unless
``WSFLEET_AUTH=disabled`` (``--no-auth``), which it announces loudly. Keys and
tokens are never logged.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import parse_qs

import jwt
import structlog
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.types import Options

from wsfleet_gateway.broker import is_text
from wsfleet_gateway.protection.auth import ANONYMOUS, Authenticator, Principal, Unauthorized
from wsfleet_gateway.protection.quotas import TierQuotas, UnknownTierError
from wsfleet_gateway.protection.settings import ProtectionSettings

log = structlog.get_logger("wsfleet_gateway.protection.jwt_auth")

MAX_TOKEN_BYTES: Final = 8192
MIN_SECRET_BYTES: Final = 32
MAX_PATTERNS: Final = 256
MAX_PATTERN_LEN: Final = 256
MAX_SHARED_PATTERN_SETS: Final = 4096
"""Distinct channel-pattern sets kept for sharing (then new sets are simply not shared)."""
NO_AUTH_WARNING: Final = (
    "AUTHENTICATION IS DISABLED (WSFLEET_AUTH=disabled / --no-auth): anyone can connect, "
    "join and publish to every channel. Development only; never expose this gateway."
)


class AuthConfigError(RuntimeError):
    """The gateway cannot start: auth is enabled but no usable key is configured."""


def token_from_request(path: str, headers: Mapping[str, str]) -> str | None:
    """The bearer token of an upgrade request (header first, then ``?token=``)."""
    header = headers.get("authorization") or headers.get("Authorization")
    if header:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    _, _, query = path.partition("?")
    if query:
        values = parse_qs(query, max_num_fields=32).get("token")
        if values and values[0]:
            return values[0]
    return None


class JwtAuthenticator:
    """An `Authenticator`: verifies the token and builds the connection's `Principal`."""

    def __init__(
        self,
        key: Any,
        algorithm: str,
        quotas: TierQuotas,
        *,
        audience: str | None = None,
        issuer: str | None = None,
        leeway_s: float = 5.0,
    ) -> None:
        self._key = key
        self.algorithm = algorithm
        self.quotas = quotas
        self._audience = audience
        self._issuer = issuer
        self._leeway_s = leeway_s
        required = ["exp", "sub"] + (["aud"] if audience else []) + (["iss"] if issuer else [])
        self._options: Options = {"require": required}
        self._patterns: dict[tuple[str, ...], tuple[str, ...]] = {}
        """Channel-pattern tuples shared by every connection with the same claim."""

    def __repr__(self) -> str:  # never show the key
        return f"JwtAuthenticator(algorithm={self.algorithm!r})"

    def __call__(self, path: str, headers: Mapping[str, str]) -> Principal:
        token = token_from_request(path, headers)
        if token is None:
            raise Unauthorized("missing token")
        return self.verify(token)

    def verify(self, token: str) -> Principal:
        """The `Principal` of a token; raises `Unauthorized` with a short reason."""
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthorized("token too large")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[self.algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options=self._options,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("bad token signature") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"invalid token: {type(exc).__name__}") from None
        return self.principal_from(claims)

    def principal_from(self, claims: Mapping[str, Any]) -> Principal:
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 256 or not is_text(sub):
            raise Unauthorized("the 'sub' claim must be a non-empty string of valid Unicode")
        tier_claim = claims.get("tier")
        if tier_claim is not None and not isinstance(tier_claim, str):
            raise Unauthorized("the 'tier' claim must be a string")
        try:
            tier = self.quotas.resolve(tier_claim)
        except UnknownTierError as exc:
            raise Unauthorized(str(exc)) from None
        patterns = claims.get("channels", [])
        if (
            not isinstance(patterns, list)
            or len(patterns) > MAX_PATTERNS
            or not all(isinstance(p, str) and 0 < len(p) <= MAX_PATTERN_LEN for p in patterns)
        ):
            raise Unauthorized("the 'channels' claim must be a list of glob patterns")
        channels = tuple(patterns)
        shared = self._patterns.get(channels)
        if shared is None:
            shared = channels = tuple(sys.intern(p) for p in channels)
            if len(self._patterns) < MAX_SHARED_PATTERN_SETS:
                self._patterns[channels] = channels
        # the decoded claims are dropped by the caller: the Principal keeps shared parts only
        return Principal(
            user=sub,
            tier=sys.intern(tier),
            channels=shared,
            max_channels=self.quotas.limit_for(tier),
        )


def _read_secret_file(path: Any, what: str) -> str:
    try:
        text: str = path.read_text().strip()
    except OSError as exc:
        raise AuthConfigError(f"cannot read {what} {str(path)!r}: {exc.strerror}") from None
    if not text:
        raise AuthConfigError(f"{what} {str(path)!r} is empty")
    return text


def load_key(settings: ProtectionSettings) -> tuple[Any, str]:
    """``(key, algorithm)`` from the settings; raises `AuthConfigError`."""
    hs = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
    if hs is None and settings.jwt_secret_file is not None:
        hs = _read_secret_file(settings.jwt_secret_file, "WSFLEET_JWT_SECRET_FILE")
    pem = settings.jwt_public_key.get_secret_value() if settings.jwt_public_key else None
    if pem is None and settings.jwt_public_key_file is not None:
        pem = _read_secret_file(settings.jwt_public_key_file, "WSFLEET_JWT_PUBLIC_KEY_FILE")
    if hs and pem:
        raise AuthConfigError(
            "both an HS256 secret and an RS256 public key are configured: set only one of "
            "WSFLEET_JWT_SECRET(_FILE) and WSFLEET_JWT_PUBLIC_KEY(_FILE)"
        )
    if pem:
        try:
            return load_pem_public_key(pem.encode()), "RS256"
        except (ValueError, TypeError):
            raise AuthConfigError(
                "the RS256 public key is not a valid PEM public key (WSFLEET_JWT_PUBLIC_KEY_FILE)"
            ) from None
    if hs:
        if len(hs.encode()) < MIN_SECRET_BYTES:
            raise AuthConfigError(
                f"the HS256 secret is too short: use at least {MIN_SECRET_BYTES} bytes (RFC 7518)"
            )
        return hs, "HS256"
    raise AuthConfigError(
        "authentication is enabled but no JWT key is configured: set WSFLEET_JWT_SECRET "
        "(HS256) or WSFLEET_JWT_PUBLIC_KEY_FILE (RS256), or run with WSFLEET_AUTH=disabled "
        "(--no-auth) for development"
    )


def build_authenticator(settings: ProtectionSettings) -> Authenticator:
    """The gateway's authenticator; refuses (AuthConfigError) without a key unless disabled."""
    if settings.auth_disabled:
        log.warning("auth_disabled", message=NO_AUTH_WARNING)
        print(f"WARNING: {NO_AUTH_WARNING}", file=sys.stderr, flush=True)
        return lambda path, headers: ANONYMOUS
    key, algorithm = load_key(settings)
    quotas = TierQuotas(dict(settings.tier_channels), settings.default_tier)
    log.info("auth_enabled", algorithm=algorithm, tiers=dict(quotas.channels))
    return JwtAuthenticator(
        key,
        algorithm,
        quotas,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        leeway_s=settings.jwt_leeway_s,
    )


def issue_token(
    key: Any,
    sub: str,
    *,
    channels: list[str] | None = None,
    tier: str | None = None,
    ttl_s: float = 3600.0,
    algorithm: str = "HS256",
    **extra: Any,
) -> str:
    """Sign a token (development, tests and the load tool): HS256 secret or RS256 private key."""
    claims: dict[str, Any] = {"sub": sub, "exp": int(time.time() + ttl_s), **extra}
    if channels is not None:
        claims["channels"] = channels
    if tier is not None:
        claims["tier"] = tier
    return jwt.encode(claims, key, algorithm=algorithm)
