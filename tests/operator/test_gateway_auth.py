"""The gateways the operator makes would start: auth from Secrets, by reference only.

For each example fleet the Deployment's env is resolved the way the kubelet does it
(ConfigMap `envFrom`, `valueFrom.secretKeyRef` from a fake Secret store, Secret volumes
written to a temporary directory), loaded into the gateway's real settings and handed to
the gateway's real authenticator builder (`jwt_auth.build_authenticator`), which refuses
(`AuthConfigError`, exit 2) when no key arrives.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from wsfleet_gateway.protection import jwt_auth
from wsfleet_operator import resources as r
from wsfleet_operator.reconcile import validate
from wsfleet_operator.spec import FleetSpec, parse_spec

from tests.operator.gateway_env import settings_from_env

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
HS_SECRET = "an-hs256-secret-of-at-least-32-bytes-for-tests!"
API_KEY = "admin-api-key-for-tests"


def _public_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _secrets(spec: FleetSpec) -> dict[tuple[str, str], str]:
    """A Secret store holding every key the spec references (values the test invents)."""
    store: dict[tuple[str, str], str] = {}
    auth = spec.auth
    assert auth is not None
    if auth.jwt_secret_ref is not None:
        store[(auth.jwt_secret_ref.name, auth.jwt_secret_ref.key)] = HS_SECRET
    if auth.jwt_public_key_secret_ref is not None:
        ref = auth.jwt_public_key_secret_ref
        store[(ref.name, ref.key)] = _public_pem()
    if auth.api_key_secret_ref is not None:
        store[(auth.api_key_secret_ref.name, auth.api_key_secret_ref.key)] = API_KEY
    if spec.redis.secret_ref is not None:
        store[(spec.redis.secret_ref.name, spec.redis.secret_ref.key)] = "redis://:pw@redis:6379/0"
    return store


def kubelet_env(spec: FleetSpec, secrets: dict[tuple[str, str], str], root: Path) -> dict[str, str]:
    """The container's environment as the kubelet builds it; Secret volumes land in `root`."""
    dep = r.build_deployment("chat", "ns", "uid", spec)
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config = r.build_configmap("chat", "ns", "uid", spec)
    assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    env = dict(config["data"])
    for item in container["env"]:
        source = item.get("valueFrom", {})
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[item["name"]] = secrets[(ref["name"], ref["key"])]
        elif "fieldRef" in source:
            env[item["name"]] = "chat-gateway-abc"
        else:
            env[item["name"]] = item["value"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        secret = volumes[mount["name"]].get("secret")
        if secret is None:
            continue
        assert mount["readOnly"] is True
        for item in secret["items"]:
            path = root / mount["mountPath"].lstrip("/") / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets[(secret["secretName"], item["key"])])
    # the container sees the mount at its absolute path; the test at root/<path>
    for name, value in env.items():
        if name.endswith("_FILE") and value.startswith("/"):
            env[name] = str(root / value.lstrip("/"))
    return env


def _example_spec(path: Path) -> FleetSpec:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    (fleet,) = [d for d in docs if d.get("kind") == "WebSocketFleet"]
    spec, errors = validate(fleet["spec"])
    assert spec is not None
    assert errors == [], errors
    return spec


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_gateways_would_start_with_auth(
    path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spec = _example_spec(path)
    secrets = _secrets(spec)
    env = kubelet_env(spec, secrets, tmp_path)
    settings = settings_from_env(monkeypatch, env)
    assert not settings.auth_disabled
    authenticator = jwt_auth.build_authenticator(settings)  # raises AuthConfigError on refusal
    assert isinstance(authenticator, jwt_auth.JwtAuthenticator)
    if spec.auth is not None and spec.auth.api_key_secret_ref is not None:
        assert settings.api_key_value == API_KEY
    # ...and the same Deployment without the Secrets' values would be refused
    bare = {k: v for k, v in env.items() if k not in ("WSFLEET_JWT_SECRET",)}
    bare.pop("WSFLEET_JWT_PUBLIC_KEY_FILE", None)
    with pytest.raises(jwt_auth.AuthConfigError):
        jwt_auth.build_authenticator(settings_from_env(monkeypatch, bare))


def test_rs256_key_is_a_read_only_file_never_env(tmp_path: Path) -> None:
    spec = parse_spec({"auth": {"jwtPublicKeySecretRef": {"name": "pub", "key": "tls.pem"}}})
    dep = r.build_deployment("chat", "ns", "uid", spec)
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volume = next(v for v in pod["volumes"] if v["name"] == r.JWT_KEY_VOLUME)
    assert volume["secret"] == {
        "secretName": "pub",
        "items": [{"key": "tls.pem", "path": r.JWT_KEY_FILE}],
        "defaultMode": 0o444,
    }
    mount = next(m for m in container["volumeMounts"] if m["name"] == r.JWT_KEY_VOLUME)
    assert mount == {"name": r.JWT_KEY_VOLUME, "mountPath": r.JWT_KEY_DIR, "readOnly": True}
    env = r.gateway_env(spec)
    assert env["WSFLEET_JWT_PUBLIC_KEY_FILE"] == f"{r.JWT_KEY_DIR}/{r.JWT_KEY_FILE}"
    assert env["WSFLEET_AUTH"] == "enabled"
    assert "WSFLEET_JWT_SECRET" not in env
    assert all(e["name"] != "WSFLEET_JWT_SECRET" for e in container["env"])


def test_disabled_auth_starts_and_is_announced(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = parse_spec({"auth": {"disabled": True}})
    env = kubelet_env(spec, {}, tmp_path)
    assert env["WSFLEET_AUTH"] == "disabled"
    settings = settings_from_env(monkeypatch, env)
    assert settings.auth_disabled
    jwt_auth.build_authenticator(settings)
    assert "AUTHENTICATION IS DISABLED" in capsys.readouterr().err


def test_secret_values_never_reach_manifests_or_status() -> None:
    """Only names and keys of Secrets appear: no manifest carries a value."""
    spec = parse_spec(
        {
            "auth": {
                "jwtSecretRef": {"name": "jwt", "key": "hs"},
                "apiKeySecretRef": {"name": "admin", "key": "k"},
            },
            "redis": {"secretRef": {"name": "redis", "key": "url"}},
        }
    )
    rendered = json.dumps(r.build_all("chat", "ns", "uid", spec))
    for value in (HS_SECRET, API_KEY):
        assert value not in rendered
    env = r.build_deployment("chat", "ns", "uid", spec)["spec"]["template"]["spec"]
    by_name = {e["name"]: e for e in env["containers"][0]["env"]}
    assert by_name["WSFLEET_JWT_SECRET"] == {
        "name": "WSFLEET_JWT_SECRET",
        "valueFrom": {"secretKeyRef": {"name": "jwt", "key": "hs"}},
    }
    assert by_name["WSFLEET_API_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "admin", "key": "k"}
    }
    config = r.build_configmap("chat", "ns", "uid", spec)["data"]
    assert not {"WSFLEET_JWT_SECRET", "WSFLEET_API_KEY", "WSFLEET_REDIS_URL"} & set(config)


@pytest.mark.parametrize(
    "auth",
    [
        {},
        {"disabled": False},
        {"disabled": True, "jwtSecretRef": {"name": "a", "key": "b"}},
        {
            "jwtSecretRef": {"name": "a", "key": "b"},
            "jwtPublicKeySecretRef": {"name": "c", "key": "d"},
        },
    ],
)
def test_none_or_conflicting_auth_is_invalid(auth: dict[str, Any]) -> None:
    spec, errors = validate({"auth": auth})
    assert spec is not None
    assert any("exactly one of" in e for e in errors), errors


def test_crd_carries_the_cel_rule_and_requires_auth() -> None:
    from wsfleet_operator import crd

    spec_schema = crd.crd_schema()["properties"]["spec"]
    assert spec_schema["required"] == ["auth"]
    (rule,) = spec_schema["properties"]["auth"]["x-kubernetes-validations"]
    assert "jwtSecretRef" in rule["rule"]
    assert "jwtPublicKeySecretRef" in rule["rule"]
    assert "self.disabled" in rule["rule"]
