"""The one reader of Redis URLs, for both of the gateway's Redis clients.

The broker's own connections (`resp.Endpoint`) and redis-py (the cache, rate limits and
popularity, `pool.make_client`) connect from what `parse_url` makes of a URL, so the two
can never disagree on a host, a database, a password or a TLS option. Forms:

- ``redis://[[user]:password@]host[:port][/db]``
- ``rediss://...``: TLS, verified against the system CAs unless the query says otherwise:
  ``ssl_cert_reqs=none|optional|required``, ``ssl_ca_certs=/path/ca.pem``,
  ``ssl_check_hostname=false``, ``ssl_certfile`` / ``ssl_keyfile`` (a client certificate)
- ``unix:///path/redis.sock[?db=N]`` (with ``user:password@`` too)

The password never appears in a repr.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


@dataclass(frozen=True)
class TlsOptions:
    cert_reqs: str = "required"
    ca_certs: str | None = None
    check_hostname: bool = True
    certfile: str | None = None
    keyfile: str | None = None

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_certs)
        context.check_hostname = self.check_hostname
        context.verify_mode = _CERT_REQS[self.cert_reqs]
        if self.certfile:
            context.load_cert_chain(self.certfile, self.keyfile)
        return context


@dataclass(frozen=True)
class RedisUrl:
    """Where and how to connect."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    """A Unix socket (``unix://``): host and port are then unused."""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsOptions | None = None

    def __repr__(self) -> str:  # never show the password
        where = self.path or f"{self.host}:{self.port}"
        return f"RedisUrl({where}, db={self.db}, tls={self.tls is not None})"

    def redis_py_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of a redis-py (asyncio) `ConnectionPool` for this URL."""
        from redis.asyncio.connection import (
            Connection,
            SSLConnection,
            UnixDomainSocketConnection,
        )

        kwargs: dict[str, Any] = {"db": self.db}
        if self.username is not None:
            kwargs["username"] = self.username
        if self.password is not None:
            kwargs["password"] = self.password
        if self.path is not None:
            return {**kwargs, "connection_class": UnixDomainSocketConnection, "path": self.path}
        kwargs.update(host=self.host, port=self.port, connection_class=Connection)
        if self.tls is not None:
            kwargs.update(
                connection_class=SSLConnection,
                ssl_cert_reqs=self.tls.cert_reqs,
                ssl_ca_certs=self.tls.ca_certs,
                ssl_check_hostname=self.tls.check_hostname,
                ssl_certfile=self.tls.certfile,
                ssl_keyfile=self.tls.keyfile,
            )
        return kwargs

    def redis_py_cluster_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of a redis-py (asyncio) `RedisCluster` seeded at this URL:
        host and port of the seed, credentials and TLS options for every node."""
        if self.path is not None:
            raise ValueError("a Redis Cluster is reached over TCP: no unix:// seed")
        if self.db:
            raise ValueError("a Redis Cluster has database 0 only: drop the /N of the URL")
        kwargs: dict[str, Any] = {"host": self.host, "port": self.port}
        if self.username is not None:
            kwargs["username"] = self.username
        if self.password is not None:
            kwargs["password"] = self.password
        if self.tls is not None:
            kwargs.update(
                ssl=True,
                ssl_cert_reqs=self.tls.cert_reqs,
                ssl_ca_certs=self.tls.ca_certs,
                ssl_check_hostname=self.tls.check_hostname,
                ssl_certfile=self.tls.certfile,
                ssl_keyfile=self.tls.keyfile,
            )
        return kwargs


def parse_url(url: str) -> RedisUrl:
    """A Redis URL (see the module docstring); ValueError says what is wrong with it."""
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    db = _db(query.get("db", "0") or "0")
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// Redis URL needs a socket path")
        return RedisUrl(path=parts.path, db=db, username=username, password=password)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(
            f"Redis URL scheme must be redis://, rediss:// or unix://, not {parts.scheme!r}"
        )
    path_db = parts.path.strip("/")
    if path_db:
        db = _db(path_db)
    tls = _tls(query) if parts.scheme == "rediss" else None
    return RedisUrl(
        parts.hostname or "127.0.0.1", parts.port or 6379, None, db, username, password, tls
    )


def _db(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"a Redis database is a number, not {text!r}")
    return int(text)


def _tls(query: dict[str, str]) -> TlsOptions:
    reqs = query.get("ssl_cert_reqs", "required").lower()
    if reqs not in _CERT_REQS:
        raise ValueError(f"ssl_cert_reqs must be none, optional or required, not {reqs!r}")
    check = query.get("ssl_check_hostname", "true" if reqs != "none" else "false")
    return TlsOptions(
        cert_reqs=reqs,
        ca_certs=query.get("ssl_ca_certs"),
        check_hostname=check.lower() in ("1", "true", "yes"),
        certfile=query.get("ssl_certfile"),
        keyfile=query.get("ssl_keyfile"),
    )
