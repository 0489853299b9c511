"""Local AWS Lambda stand-in: the Invoke REST API for unmodified boto3, running handlers via awslambdaric.

Usage: python -m aws_standins.lambda_server --port 9001 --function-config functions.yaml
"""

from __future__ import annotations

import argparse
import base64
import http.server
import json
import logging
import re
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from .config import FunctionConfig, ServerConfig, load_config, parse_env_pairs
from .pool import MAX_PAYLOAD, FunctionPool, InvokeResult

log = logging.getLogger("aws_standins")

FUNCTION_PATH = re.compile(r"^/2015-03-31/functions/([^/]+)(/invocations|/configuration)?/?$")
CONCURRENCY_PATH = re.compile(r"^/2019-09-30/functions/([^/]+)/concurrency/?$")  # GetFunctionConcurrency
ACCOUNT_PATH = "/2016-08-19/account-settings/"  # GetAccountSettings
ADMIN_PATH = re.compile(r"^/_standin/functions/([^/]+)$")


def split_function_name(raw: str) -> tuple[str, str | None]:
    """Accept a name, name:qualifier, or a (partial) ARN, as AWS does; return (name, qualifier)."""
    name = unquote(raw)
    parts = name.split(":")
    if name.startswith("arn:"):
        parts = parts[6:]
    elif len(parts) >= 3 and parts[1] == "function":  # account-id:function:name[:qualifier]
        parts = parts[2:]
    return parts[0], (parts[1] if len(parts) > 1 else None)


class LambdaStandin(http.server.ThreadingHTTPServer):
    """HTTP server holding one worker pool per configured function."""

    daemon_threads = True
    request_queue_size = 4096  # a dispatcher may open a thousand connections at once

    def __init__(self, port: int, config: ServerConfig, poll_s: float = 0.02) -> None:
        self.config = config
        self.tmp_root = Path(tempfile.mkdtemp(prefix="cosmicai-lambda-"))
        self.pools = {name: FunctionPool(fn, config, self.tmp_root, poll_s) for name, fn in config.functions.items()}
        super().__init__(("127.0.0.1", port), _InvokeAPIHandler)
        self._stop = threading.Event()
        threading.Thread(target=self._reaper, name="reaper", daemon=True).start()

    def _reaper(self) -> None:
        while not self._stop.wait(5.0):
            for pool in list(self.pools.values()):
                pool.reap_idle(time.monotonic())

    def arn(self, name: str, qualifier: str | None = None) -> str:
        """ARN of a function as AWS prints it in errors."""
        base = f"arn:aws:lambda:{self.config.region}:{self.config.account_id}:function:{name}"
        return f"{base}:{qualifier}" if qualifier else base

    def describe(self, fn: FunctionConfig) -> dict[str, object]:
        """A GetFunctionConfiguration-shaped description."""
        return {
            "FunctionName": fn.name,
            "FunctionArn": self.arn(fn.name),
            "Runtime": "python3.11",
            "Handler": fn.handler,
            "MemorySize": fn.memory_mb,
            "Timeout": int(fn.timeout_s),
            "Version": "$LATEST",
            "State": "Active",
            "LastUpdateStatus": "Successful",
            "PackageType": "Zip",
            "Architectures": [fn.architecture],
            "EphemeralStorage": {"Size": fn.ephemeral_storage_mb},
            "Environment": {"Variables": dict(fn.environment)},
        }

    def close(self) -> None:
        """Stop serving and kill all workers."""
        self._stop.set()
        self.shutdown()
        workers = [w for pool in self.pools.values() for w in pool.take_all()]
        for worker in workers:
            worker.kill()  # all at once; in-flight invocations end as Runtime.ExitError
        closers = [threading.Thread(target=w.close) for w in workers]
        for thread in closers:
            thread.start()
        for thread in closers:
            thread.join()
        self.server_close()
        shutil.rmtree(self.tmp_root, ignore_errors=True)


class _InvokeAPIHandler(http.server.BaseHTTPRequestHandler):
    """Routes of the Lambda REST API that boto3 uses, plus a small /_standin admin API."""

    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
    disable_nagle_algorithm = True  # avoid the 40 ms Nagle/delayed-ACK stall on small responses
    server: LambdaStandin

    def log_message(self, fmt: str, *args: object) -> None:
        log.debug("invoke-api " + fmt, *args)

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {"Content-Type": "application/json"}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, error_type: str, message: str) -> None:
        """An API-level error the way botocore's rest-json parser reads it."""
        body = json.dumps({"Type": "User", "message": message}).encode()
        self._send(status, body, {"Content-Type": "application/json", "x-amzn-ErrorType": error_type})

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _lookup(self, raw: str, query: str) -> FunctionPool | None:
        name, qualifier = split_function_name(raw)
        qualifier = parse_qs(query).get("Qualifier", [qualifier])[0]
        pool = self.server.pools.get(name)
        if pool is None or qualifier not in (None, "$LATEST"):
            self._error(404, "ResourceNotFoundException", f"Function not found: {self.server.arn(name, qualifier)}")
            return None
        return pool

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path in ("/_standin/health", "/_standin/stats"):
            stats = {name: pool.snapshot() for name, pool in self.server.pools.items()}
            self._send(200, json.dumps({"functions": stats}).encode())
            return
        if url.path.rstrip("/") + "/" == ACCOUNT_PATH:
            self._send(200, json.dumps(self._account_settings()).encode())
            return
        if concurrency := CONCURRENCY_PATH.match(url.path):
            pool = self._lookup(concurrency.group(1), "")
            if pool is not None:
                reserved = pool.fn.reserved_concurrency
                self._send(200, json.dumps({} if reserved is None else {"ReservedConcurrentExecutions": reserved}).encode())
            return
        match = FUNCTION_PATH.match(url.path)
        if not match or match.group(2) == "/invocations":
            self._error(404, "UnknownOperationException", f"no route for GET {url.path}")
            return
        pool = self._lookup(match.group(1), url.query)
        if pool is None:
            return
        config = self.server.describe(pool.fn)
        if match.group(2) is None:  # GetFunction
            concurrency = {"ReservedConcurrentExecutions": pool.fn.reserved_concurrency} if pool.fn.reserved_concurrency is not None else {}
            config = {"Configuration": config, "Concurrency": concurrency}
        self._send(200, json.dumps(config).encode())

    def _account_settings(self) -> dict[str, object]:
        """GetAccountSettings: the regional limit, less what functions reserve."""
        total = self.server.config.account_concurrency
        reserved = sum(p.fn.reserved_concurrency or 0 for p in self.server.pools.values())
        return {
            "AccountLimit": {
                "ConcurrentExecutions": total,
                "UnreservedConcurrentExecutions": max(0, total - reserved),
                "CodeSizeUnzipped": 262144000,
                "CodeSizeZipped": 52428800,
                "TotalCodeSize": 80530636800,
            },
            "AccountUsage": {"FunctionCount": len(self.server.pools), "TotalCodeSize": 0},
        }

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        admin = ADMIN_PATH.match(url.path)
        if admin:
            self._admin_patch(admin.group(1))
            return
        match = FUNCTION_PATH.match(url.path)
        if not match or match.group(2) != "/invocations":
            self._body()
            self._error(404, "UnknownOperationException", f"no route for POST {url.path}")
            return
        payload = self._body()
        pool = self._lookup(match.group(1), url.query)
        if pool is None:
            return
        if len(payload) > MAX_PAYLOAD:
            # What AWS answers a synchronous payload over 6 MB (the API reference's RequestTooLargeException is the model's name).
            self._error(
                413, "RequestEntityTooLargeException", f"Request must be smaller than {MAX_PAYLOAD} bytes for the InvokeFunction operation"
            )
            return
        try:
            json.loads(payload or b"{}")
        except ValueError:
            self._error(400, "InvalidRequestContentException", "Could not parse request body into json")
            return
        payload = payload or b"{}"
        invocation_type = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if invocation_type == "DryRun":
            self._send(204, b"", {"x-amzn-RequestId": "dryrun"})
            return
        context = self.headers.get("X-Amz-Client-Context")
        context = base64.b64decode(context).decode() if context else None
        if invocation_type == "Event":
            threading.Thread(target=self._run_async, args=(pool, payload, context), daemon=True).start()
            self._send(202, b"")
            return
        result = pool.invoke(payload, self.headers.get("X-Amz-Log-Type") == "Tail", context)
        self._reply(result)

    @staticmethod
    def _run_async(pool: FunctionPool, payload: bytes, context: str | None) -> None:
        """Event invocations: AWS queues them and retries throttles for hours; we retry for an hour."""
        deadline = time.monotonic() + 3600
        while pool.invoke(payload, False, context).status == 429 and time.monotonic() < deadline:
            time.sleep(0.5)

    def _reply(self, result: InvokeResult) -> None:
        if result.body is None:  # injected lost response: the caller sees a dropped connection
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self._send(result.status, result.body, result.headers)

    def _admin_patch(self, name: str) -> None:
        """POST /_standin/functions/NAME with a JSON patch (limits, environment, faults)."""
        pool = self.server.pools.get(name)
        if pool is None:
            self._body()
            self._error(404, "ResourceNotFoundException", f"Function not found: {self.server.arn(name)}")
            return
        try:
            pool.fn.apply(json.loads(self._body()))
        except (ValueError, TypeError) as exc:
            self._error(400, "InvalidParameterValueException", str(exc))
            return
        pool.retire_idle()
        self._send(200, json.dumps(self.server.describe(pool.fn)).encode())


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cosmicai-lambda-standin", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--function-config", help="JSON or YAML file with a `functions:` list (see config.FunctionConfig)")
    parser.add_argument(
        "--function",
        action="append",
        default=[],
        metavar="NAME=MODULE.HANDLER",
        help="add a function; the flags below apply to functions given this way",
    )
    parser.add_argument("--memory-mb", type=int, default=128)
    parser.add_argument("--timeout-s", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=None, help="reserved concurrency")
    parser.add_argument("--code-dir", action="append", default=[], help="PYTHONPATH entry for workers (first is cwd)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--region", default=None)
    parser.add_argument("--poll-ms", type=float, default=20.0, help="memory watchdog interval")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: serve until SIGTERM/SIGINT, then kill all workers."""
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    cli_functions = []
    for spec in args.function:
        name, _, handler = spec.partition("=")
        cli_functions.append(
            {
                "name": name,
                "handler": handler,
                "memory_mb": args.memory_mb,
                "timeout_s": args.timeout_s,
                "reserved_concurrency": args.concurrency,
                "code_dirs": args.code_dir,
                "environment": parse_env_pairs(args.env),
            }
        )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # a thousand connections at once, and their workers' pipes
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else max(soft, 65536), hard))
    config = load_config(args.function_config, cli_functions)
    if args.region:
        config.region = args.region
    if not config.functions:
        log.warning("no functions configured: every invoke will answer ResourceNotFoundException")
    server = LambdaStandin(args.port, config, args.poll_ms / 1000)

    def stop(signum: int, _frame: object) -> None:
        # shutdown() blocks until serve_forever returns, so it must run off the main thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("Lambda stand-in on http://127.0.0.1:%d, functions: %s", server.server_address[1], ", ".join(config.functions) or "none")
    server.serve_forever()
    log.info("shutting down")
    server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
