"""A small typed async Kubernetes client over aiohttp.

Only what the operator needs: get, list (label selector), create,
merge-patch, delete, and Events. Every call is checked against
`rbac.REQUIRED_RULES` before it leaves the process, and every write is counted
(`wsfleet_operator_kube_writes_total`). Merge-patch only, never PUT: a patch
names just the fields the operator owns, so it never overwrites what another
controller or a user set since the last read.
"""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from wsfleet_operator import opmetrics, rbac
from wsfleet_operator.spec import GROUP, PLURAL, VERSION

log = structlog.get_logger("wsfleet.operator.kube")

JSON = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    """A Kubernetes resource (group/version/plural)."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base


DEPLOYMENTS = Kind("apps", "v1", "deployments")
SERVICES = Kind("", "v1", "services")
CONFIGMAPS = Kind("", "v1", "configmaps")
PDBS = Kind("policy", "v1", "poddisruptionbudgets")
PODS = Kind("", "v1", "pods")
EVENTS = Kind("", "v1", "events")
SECRETS = Kind("", "v1", "secrets")
FLEETS = Kind(GROUP, VERSION, PLURAL)


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class ConflictError(KubeError):
    pass


class NamespaceTerminatingError(KubeError):
    """A create in a namespace being deleted (403, cause NamespaceTerminating): nothing to do
    there any more; not a permission problem."""


@dataclass(frozen=True)
class Connection:
    """Where the API server is and how to authenticate (built from kopf's ConnectionInfo)."""

    server: str
    headers: tuple[tuple[str, str], ...] = ()
    ssl_context: ssl.SSLContext | bool | None = None

    @classmethod
    def from_kopf(cls, info: Any) -> Connection:
        """From a `kopf.ConnectionInfo` (token or client certificate, CA path or data).

        kopf builds the SSL context itself (`as_ssl_context`): kubeconfig `*-data` fields
        are base64, in-cluster ones PEM; key material only ever touches a temporary file
        for the moment `ssl` needs it, and that file is gone afterwards.
        """
        headers = tuple(info.as_http_headers().items())
        context: ssl.SSLContext | bool | None = None
        if info.server.startswith("https"):
            context = False if info.insecure else info.as_ssl_context()
        return cls(server=info.server.rstrip("/"), headers=headers, ssl_context=context)


def _selector(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def user_agent(identity: str | None = None) -> str:
    """`wsfleet-operator/<version> (<identity>)`: the API server's audit log names the instance."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("wsfleet")
    except PackageNotFoundError:  # pragma: no cover - always installed with the package
        ours = "dev"
    who = identity or os.environ.get("HOSTNAME") or socket.gethostname()
    return f"wsfleet-operator/{ours} ({who})"


class KubeClient:
    """Async Kubernetes API calls; create with `async with KubeClient(conn)`."""

    def __init__(
        self,
        conn: Connection,
        timeout_s: float = 30.0,
        *,
        enforce_rbac: bool = True,
        user_agent: str = "wsfleet-operator",
    ) -> None:
        self.conn = conn
        self.enforce_rbac = enforce_rbac
        self.user_agent = user_agent
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={**dict(self.conn.headers), "User-Agent": self.user_agent},
                timeout=self._timeout,
            )
        return self._session

    async def reconnect(self, conn: Connection) -> None:
        """Use new credentials from now on (e.g. a rotated service-account token)."""
        self.conn = conn
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self,
        method: str,
        kind: Kind,
        verb: str,
        path: str,
        sub: str | None = None,
        body: JSON | None = None,
        params: dict[str, str] | None = None,
    ) -> JSON | None:
        resource = f"{kind.plural}/{sub}" if sub else kind.plural
        if self.enforce_rbac:
            rbac.check_allowed(kind.group, resource, verb)
        if method != "GET":
            opmetrics.KUBE_WRITES.labels(verb=verb, resource=resource).inc()
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        async with self._http().request(
            method,
            self.conn.server + path,
            json=body,
            params=params,
            headers=headers,
            ssl=self.conn.ssl_context if self.conn.ssl_context is not None else True,
        ) as resp:
            if resp.status == 404:
                return None
            text = await resp.text()
            if resp.status == 409:
                raise ConflictError(resp.status, text[:500])
            if resp.status == 403 and "NamespaceTerminating" in text:
                raise NamespaceTerminatingError(resp.status, text[:500])
            if resp.status >= 400:
                raise KubeError(resp.status, text[:500])
            result: JSON = await resp.json(content_type=None) if text else {}
            return result

    async def get(
        self, kind: Kind, namespace: str, name: str, sub: str | None = None
    ) -> JSON | None:
        return await self._call("GET", kind, "get", kind.path(namespace, name, sub), sub=sub)

    async def list(self, kind: Kind, namespace: str, labels: dict[str, str]) -> list[JSON]:
        params = {"labelSelector": _selector(labels)} if labels else None
        got = await self._call("GET", kind, "list", kind.path(namespace), params=params)
        items: list[JSON] = (got or {}).get("items") or []
        return items

    async def create(self, kind: Kind, namespace: str, body: JSON) -> JSON:
        got = await self._call("POST", kind, "create", kind.path(namespace), body=body)
        if got is None:
            raise KubeError(404, f"namespace {namespace} or {kind.plural} not found")
        return got

    async def patch(
        self, kind: Kind, namespace: str, name: str, patch: JSON, sub: str | None = None
    ) -> JSON | None:
        """JSON merge-patch; None when the object does not exist."""
        return await self._call(
            "PATCH", kind, "patch", kind.path(namespace, name, sub), sub=sub, body=patch
        )

    async def delete(self, kind: Kind, namespace: str, name: str) -> bool:
        """True when it existed."""
        got = await self._call("DELETE", kind, "delete", kind.path(namespace, name))
        return got is not None

    async def create_event(
        self,
        involved: JSON,
        reason: str,
        message: str,
        type_: str = "Normal",
    ) -> None:
        """A core/v1 Event about `involved` (best effort: failures are logged)."""
        meta = involved.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        now = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
        body: JSON = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta.get('name', 'wsfleet')}.{uuid.uuid4().hex[:16]}",
                "namespace": namespace,
            },
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": "wsfleet-operator"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": "wsfleet-operator",
        }
        try:
            await self.create(EVENTS, namespace, body)
        except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("kube.event_failed", reason=reason, error=str(exc))
