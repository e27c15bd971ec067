"""JWT authentication: HS256 and RS256, header and query, claims, keys, refusal to start."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from wsfleet_gateway.protection.auth import Unauthorized
from wsfleet_gateway.protection.jwt_auth import (
    NO_AUTH_WARNING,
    AuthConfigError,
    JwtAuthenticator,
    build_authenticator,
    issue_token,
    load_key,
    token_from_request,
)
from wsfleet_gateway.protection.quotas import TierQuotas
from wsfleet_gateway.protection.settings import ProtectionSettings

from tests.protection.support import SECRET


@pytest.fixture(scope="module")
def rsa_pair() -> tuple[bytes, bytes]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def hs_auth() -> JwtAuthenticator:
    auth = build_authenticator(ProtectionSettings(jwt_secret=SECRET))
    assert isinstance(auth, JwtAuthenticator)
    return auth


def test_hs256_header_and_query_give_the_principal() -> None:
    auth = hs_auth()
    tok = issue_token(SECRET, "ada", channels=["wedding-*"], tier="paid")
    p = auth("/ws", {"authorization": f"Bearer {tok}"})
    assert (p.user, p.tier, p.channels, p.max_channels) == ("ada", "paid", ("wedding-*",), 10)
    assert p.may_join("wedding-42")
    assert not p.may_join("funeral-1")
    q = auth(f"/ws?x=1&token={tok}", {})
    assert q == p
    free = auth("/ws", {"authorization": f"Bearer {issue_token(SECRET, 'bo')}"})
    assert (free.tier, free.max_channels, free.channels) == ("free", 3, ())


def test_rs256_from_a_key_file(tmp_path: Path, rsa_pair: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = rsa_pair
    key_file = tmp_path / "jwt.pub"
    key_file.write_bytes(public_pem)
    auth = build_authenticator(ProtectionSettings(jwt_public_key_file=key_file))
    assert isinstance(auth, JwtAuthenticator)
    assert auth.algorithm == "RS256"
    assert "BEGIN" not in repr(auth)
    tok = issue_token(private_pem, "cy", channels=["*"], algorithm="RS256")
    assert auth.verify(tok).user == "cy"
    # an HS256 token signed with the public key text must not pass (algorithm confusion)
    forged = jwt.encode(
        {"sub": "x", "exp": time.time() + 60},
        "not-the-key-not-the-key-not-the-key-0",
        algorithm="HS256",
    )
    with pytest.raises(Unauthorized):
        auth.verify(forged)
    env_auth = build_authenticator(ProtectionSettings(jwt_public_key=public_pem.decode()))
    assert isinstance(env_auth, JwtAuthenticator)
    assert env_auth.verify(tok).user == "cy"


@pytest.mark.parametrize(
    ("token_value", "reason"),
    [
        (issue_token(SECRET, "a", ttl_s=-60), "token expired"),
        (issue_token("another-secret-0123456789-0123456789", "a"), "bad token signature"),
        (jwt.encode({"sub": "a"}, SECRET, algorithm="HS256"), "lacks the 'exp'"),
        (jwt.encode({"exp": time.time() + 60}, SECRET, algorithm="HS256"), "lacks the 'sub'"),
        (issue_token(SECRET, "a", tier="gold"), "unknown tier"),
        (issue_token(SECRET, "a", tier=None, extra_tier=1), ""),  # no tier: default, accepted
        ("not.a.jwt", "invalid token"),
        ("x" * 9000, "too large"),
    ],
)
def test_bad_tokens_are_refused_with_a_reason(token_value: str, reason: str) -> None:
    auth = hs_auth()
    if not reason:
        assert auth.verify(token_value).tier == "free"
        return
    with pytest.raises(Unauthorized, match=reason):
        auth.verify(token_value)


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": 5},
        {"sub": ""},
        {"sub": "ann\ud800"},  # a lone surrogate: no UTF-8 form for the Redis counter key
        {"sub": "a", "tier": 3},
        {"sub": "a", "channels": "*"},
        {"sub": "a", "channels": [1]},
        {"sub": "a", "channels": [""]},
    ],
)
def test_malformed_claims_are_refused(claims: dict[str, object]) -> None:
    tok = jwt.encode({"exp": int(time.time()) + 60, **claims}, SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized):
        hs_auth().verify(tok)


def test_audience_and_issuer_when_configured() -> None:
    auth = JwtAuthenticator(SECRET, "HS256", TierQuotas(), audience="wsfleet", issuer="idp")
    good = issue_token(SECRET, "a", aud="wsfleet", iss="idp")
    assert auth.verify(good).user == "a"
    with pytest.raises(Unauthorized):
        auth.verify(issue_token(SECRET, "a", aud="other", iss="idp"))
    with pytest.raises(Unauthorized, match="'aud'"):
        auth.verify(issue_token(SECRET, "a", iss="idp"))


def test_token_from_request_prefers_the_header() -> None:
    assert token_from_request("/ws?token=q", {"authorization": "Bearer h"}) == "h"
    assert token_from_request("/ws?token=q", {"authorization": "Basic h"}) == "q"
    assert token_from_request("/ws?token=", {}) is None
    assert token_from_request("/ws", {"Authorization": "bearer  t "}) == "t"
    with pytest.raises(Unauthorized, match="missing token"):
        hs_auth()("/ws", {})


def test_no_key_refuses_to_start_with_a_clear_message() -> None:
    with pytest.raises(AuthConfigError, match=r"WSFLEET_JWT_SECRET.*WSFLEET_AUTH=disabled"):
        build_authenticator(ProtectionSettings())


def test_key_configuration_errors(tmp_path: Path, rsa_pair: tuple[bytes, bytes]) -> None:
    with pytest.raises(AuthConfigError, match="cannot read"):
        load_key(ProtectionSettings(jwt_public_key_file=tmp_path / "missing.pem"))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(AuthConfigError, match="is empty"):
        load_key(ProtectionSettings(jwt_secret_file=empty))
    with pytest.raises(AuthConfigError, match="not a valid PEM"):
        load_key(ProtectionSettings(jwt_public_key="garbage"))
    with pytest.raises(AuthConfigError, match="too short"):
        load_key(ProtectionSettings(jwt_secret="short"))
    with pytest.raises(AuthConfigError, match="only one"):
        load_key(ProtectionSettings(jwt_secret=SECRET, jwt_public_key=rsa_pair[1].decode()))
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    assert load_key(ProtectionSettings(jwt_secret_file=secret_file)) == (SECRET, "HS256")


def test_env_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSFLEET_JWT_SECRET", SECRET)
    monkeypatch.setenv("WSFLEET_TIER_CHANNELS", '{"free": 2, "pro": 25}')
    monkeypatch.setenv("WSFLEET_DEFAULT_TIER", "pro")
    settings = ProtectionSettings()
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.model_dump())
    auth = build_authenticator(settings)
    assert auth("/ws", {"authorization": f"Bearer {issue_token(SECRET, 'a')}"}).max_channels == 25


def test_disabled_auth_is_loud(capsys: pytest.CaptureFixture[str]) -> None:
    auth = build_authenticator(ProtectionSettings(auth="disabled"))
    assert auth("/ws", {}).user == "anonymous"
    assert NO_AUTH_WARNING in capsys.readouterr().err
