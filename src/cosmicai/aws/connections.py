"""Keep-alive HTTP(S) connections to one endpoint, shared by threads: the transport of the lean Invoke client.

http.client connections, reused last-in first-out (a connection the server closed while idle is
dropped before reuse, as urllib3 does), at most `max_idle` kept. Failures raise botocore's exceptions,
as its URLLib3Session does, so that retries and error lines treat them alike: no connection
(EndpointConnectionError, ConnectTimeoutError, SSLError), no response in time (ReadTimeoutError), a
connection closed before a whole response (ConnectionClosedError). TLS verifies the endpoint against
botocore's CA bundle (or the configured one). Requests through a proxy use `SessionTransport`:
botocore's own HTTP session, slower but with its proxy support.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
from typing import Any, Protocol
from urllib.parse import urlsplit

from botocore.awsrequest import AWSRequest
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
    SSLError,
)


class Transport(Protocol):
    """Sends one request; returns (status, headers with case-insensitive get, body)."""

    def request(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, bytes]:
        """One HTTP exchange on the endpoint; `path` includes any query."""
        ...

    def close(self) -> None:
        """Close idle connections."""
        ...


def host_header(endpoint_url: str) -> str:
    """The Host header (and signed host) of an endpoint: its netloc without a default port."""
    url = urlsplit(endpoint_url)
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.hostname if url.port in (None, default) and url.hostname and ":" not in url.hostname else url.netloc


class ConnectionPool:
    """Keep-alive connections to one http(s) endpoint; each request takes one, returns it when the response allows."""

    def __init__(
        self, endpoint_url: str, connect_timeout_s: float, read_timeout_s: float, max_idle: int, ca_bundle: str | None = None
    ) -> None:
        url = urlsplit(endpoint_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) endpoint: {endpoint_url!r}")
        self.endpoint_url = endpoint_url
        self.https = url.scheme == "https"
        self.host, self.port = url.hostname, url.port or (443 if self.https else 80)
        self.base_path = url.path.rstrip("/")
        self.connect_timeout_s, self.read_timeout_s, self.max_idle = connect_timeout_s, read_timeout_s, max_idle
        self._tls = ssl.create_default_context(cafile=ca_bundle) if self.https else None
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def request(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, bytes]:
        """One exchange on a pooled (or new) connection; the connection goes back unless the response closes it."""
        conn = self._take()
        try:
            conn.request(method, self.base_path + path, body, headers)
            response = conn.getresponse()
            data = response.read()
        except TimeoutError as exc:
            conn.close()
            raise ReadTimeoutError(endpoint_url=self.endpoint_url, error=exc) from None
        except (OSError, http.client.HTTPException) as exc:  # reset, closed, truncated
            conn.close()
            raise ConnectionClosedError(endpoint_url=self.endpoint_url, error=exc) from None
        if response.will_close:
            conn.close()
        else:
            self._give(conn)
        return response.status, response.headers, data

    def close(self) -> None:
        """Close the idle connections (ones in use close when their request ends)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _take(self) -> http.client.HTTPConnection:
        """The most recently used idle connection still open, else a new one."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect()
            if not _dropped(conn.sock):
                return conn
            conn.close()

    def _give(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def _connect(self) -> http.client.HTTPConnection:
        """A new connection (TLS handshake included), its socket then waiting up to the read timeout."""
        if self._tls is not None:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.connect_timeout_s, context=self._tls
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.connect_timeout_s)
        try:
            conn.connect()
        except TimeoutError as exc:
            raise ConnectTimeoutError(endpoint_url=self.endpoint_url, error=exc) from None
        except ssl.SSLError as exc:
            raise SSLError(endpoint_url=self.endpoint_url, error=exc) from None
        except OSError as exc:  # refused, unreachable, no such host
            raise EndpointConnectionError(endpoint_url=self.endpoint_url, error=exc) from None
        assert conn.sock is not None
        conn.sock.settimeout(self.read_timeout_s)
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)  # as the boto3 client's tcp_keepalive
        return conn


def _dropped(sock: socket.socket | None) -> bool:
    """Whether an idle connection's socket is closed or has something to read (it cannot be reused)."""
    if sock is None:
        return True
    poller = select.poll()  # not select(): descriptors above 1024 with a thousand connections
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class SessionTransport:
    """botocore's HTTP session of a client (its pool, TLS, timeouts and proxies): for endpoints reached through a proxy."""

    def __init__(self, endpoint_url: str, http_session: Any) -> None:
        self.endpoint_url = endpoint_url.rstrip("/")
        self.http_session = http_session

    def request(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, bytes]:
        """One exchange through botocore's session (its exceptions are the pool's)."""
        response = self.http_session.send(AWSRequest(method, self.endpoint_url + path, data=body, headers=headers).prepare())
        return response.status_code, response.headers, response.content

    def close(self) -> None:
        """botocore closes its own pool."""
