"""A fault-injecting HTTP proxy in front of an S3 endpoint (rclone serve s3): S3's 503 answers, from the server side.

Clients (boto3 in the invoker and in the function) point AWS_ENDPOINT_URL_S3 at the proxy. It forwards
every request unchanged (the Host header too, so SigV4 signatures still verify upstream) and streams the
answer back, except that with the configured probability it answers a request itself, as S3 does
when it sheds load:

    503 SlowDown            "Please reduce your request rate."
    503 ServiceUnavailable  "Service is unable to handle request."

Settings (JSON, at start with --faults or at runtime with POST /_standin/faults, merged):
    slow_down, unavailable   probabilities 0..1 (off by default)
    methods                  only requests with these HTTP methods (default: all)
    match                    only requests whose path contains this string (default: all)
    max_hits                 inject at most this many answers in all (null: no limit)
    seed                     for the random draws
    no_list_permission       answer a missing key (upstream 404) with 403 AccessDenied, as S3 does when the
                             caller lacks s3:ListBucket (the README's policies grant only Get/PutObject)
GET /_standin/stats: requests seen, answers injected per kind, current settings.

Usage: python -m aws_standins.s3_faults --port 9002 --upstream http://127.0.0.1:9000
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import http.server
import json
import logging
import random
import signal
import sys
import threading
import uuid
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("aws_standins.s3")

ADMIN = "/_standin/"  # no bucket name starts with '_'
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}
CHUNK = 1 << 20
ANSWERS = {
    "slow_down": ("SlowDown", "Please reduce your request rate."),
    "unavailable": ("ServiceUnavailable", "Service is unable to handle request."),
}


@dataclasses.dataclass
class S3Faults:
    """Which requests the proxy answers with a 503 itself."""

    slow_down: float = 0.0
    unavailable: float = 0.0
    methods: list[str] | None = None
    match: str = ""
    max_hits: int | None = None
    seed: int | None = None
    no_list_permission: bool = False

    def __post_init__(self) -> None:
        for name in ANSWERS:
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"{name} must be a probability in 0..1, got {getattr(self, name)!r}")
        self._rng = random.Random(self.seed)
        self._hits = 0

    def draw(self, method: str, path: str) -> str | None:
        """The fault to answer this request with, if any (called under the proxy's lock)."""
        if self.methods is not None and method not in self.methods or self.match not in path:
            return None
        if self.max_hits is not None and self._hits >= self.max_hits:
            return None
        for name in ANSWERS:
            p = float(getattr(self, name))
            if p > 0 and self._rng.random() < p:
                self._hits += 1
                return name
        return None

    def settings(self) -> dict[str, Any]:
        """The configured values (for merging a runtime patch, and for stats)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


class FaultProxy(http.server.ThreadingHTTPServer):
    """The proxy server: its upstream, its faults and its counters."""

    daemon_threads = True
    request_queue_size = 256

    def __init__(self, port: int, upstream: str, faults: S3Faults) -> None:
        url = urlsplit(upstream)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"upstream must be http://HOST:PORT, got {upstream!r}")
        self.upstream = (url.hostname, url.port or 80)
        self.faults = faults
        self.lock = threading.Lock()
        self.stats: dict[str, Any] = {"requests": 0, "injected": dict.fromkeys(ANSWERS, 0)}
        super().__init__(("127.0.0.1", port), _ProxyHandler)

    def draw(self, method: str, path: str) -> str | None:
        """Count a request and decide whether to answer it with a fault."""
        with self.lock:
            self.stats["requests"] += 1
            fault = self.faults.draw(method, path)
            if fault:
                self.stats["injected"][fault] += 1
            return fault

    def snapshot(self) -> dict[str, Any]:
        """Counters and settings for GET /_standin/stats."""
        with self.lock:
            return {
                "requests": self.stats["requests"],
                "injected": dict(self.stats["injected"]),
                "denied_missing": self.stats.get("denied_missing", 0),
                "faults": self.faults.settings(),
            }


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: FaultProxy

    def log_message(self, fmt: str, *args: object) -> None:
        log.debug("s3-proxy " + fmt, *args)

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _body(self) -> bytes:
        """The request body, whether sized or chunked."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _admin(self) -> None:
        path = urlsplit(self.path).path
        if self.command == "GET" and path == ADMIN + "stats":
            self._send(200, json.dumps(self.server.snapshot()).encode(), {"Content-Type": "application/json"})
        elif self.command == "POST" and path == ADMIN + "faults":
            try:
                patch = json.loads(self._body())
                with self.server.lock:
                    self.server.faults = S3Faults(**{**self.server.faults.settings(), **patch})
            except (ValueError, TypeError) as exc:
                self._send(400, json.dumps({"error": str(exc)}).encode(), {"Content-Type": "application/json"})
                return
            self._send(200, json.dumps(self.server.snapshot()).encode(), {"Content-Type": "application/json"})
        else:
            self._send(404, b"", {})

    def _handle(self) -> None:
        if self.path.startswith(ADMIN):
            self._admin()
            return
        body = self._body()  # read even when answering ourselves, so the connection stays usable
        fault = self.server.draw(self.command, urlsplit(self.path).path)
        if fault:
            code, message = ANSWERS[fault]
            request_id = uuid.uuid4().hex[:16].upper()
            xml = (
                f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
                f"<RequestId>{request_id}</RequestId></Error>"
            ).encode()
            log.info("%s %s: injected 503 %s", self.command, self.path, code)
            self._send(503, xml, {"Content-Type": "application/xml", "x-amz-request-id": request_id})
            return
        self._forward(body)

    def _forward(self, body: bytes) -> None:
        # The body is already read (and any 100 Continue sent), so upstream gets it whole without Expect.
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "expect"}
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        upstream = http.client.HTTPConnection(*self.server.upstream, timeout=300)
        try:
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            if response.status == 404 and self.server.faults.no_list_permission and self.command in ("GET", "HEAD"):
                response.read()
                with self.server.lock:
                    self.server.stats["denied_missing"] = self.server.stats.get("denied_missing", 0) + 1
                xml = b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>'
                self._send(403, xml, {"Content-Type": "application/xml"})
                return
            self.send_response(response.status, response.reason)
            length = response.getheader("Content-Length")
            payload = None
            if length is None and self.command != "HEAD":
                payload = response.read()  # unsized (chunked) answers are small listings: size them here
                length = str(len(payload))
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            if self.command == "HEAD":
                return
            if payload is not None:
                self.wfile.write(payload)
                return
            while chunk := response.read(CHUNK):
                self.wfile.write(chunk)
        finally:
            upstream.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: proxy until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="cosmicai-s3-faults", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9002)
    parser.add_argument("--upstream", required=True, help="the S3 endpoint to forward to, http://HOST:PORT")
    parser.add_argument("--faults", default="{}", help="initial fault settings as JSON (see the module docstring)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    server = FaultProxy(args.port, args.upstream, S3Faults(**json.loads(args.faults)))

    def stop(signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("S3 fault proxy on http://127.0.0.1:%d -> http://%s:%d", server.server_address[1], *server.upstream)
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
