"""moto (an AWS implementation not written here) as a test server on 127.0.0.1: S3 with versioning, IAM users
and policies enforced on S3 calls (INITIAL_NO_AUTH_ACTION_COUNT), the Lambda control plane (no invocation)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.stands import free_port, stop

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def moto_server() -> str:
    """moto's server beside this interpreter (pip install 'moto[server]'); skips the test without it."""
    exe = Path(sys.executable).parent / "moto_server"
    if not exe.exists():
        pytest.skip("moto_server not installed (pip install 'moto[server]')")
    return str(exe)


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until the port accepts connections. No HTTP request: with IAM enforced, each one counts as unauthenticated."""
    for _ in range(600):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None:
            pytest.fail(f"moto_server exited {proc.returncode}: {log.read_text()}")
        time.sleep(0.05)
    pytest.fail(f"moto_server did not listen on {port}: {log.read_text()}")


class Moto:
    """A running moto server: its URL and clients for given credentials."""

    def __init__(self, url: str, key: str = "moto-key", secret: str = "moto-secret") -> None:
        self.url, self.key, self.secret = url, key, secret

    def client(self, service: str, key: str | None = None, secret: str | None = None, **config: Any) -> Any:
        """A boto3 client of this server, with the admin's credentials unless others are given."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=key or self.key,
            aws_secret_access_key=secret or self.secret,
            config=Config(retries={"mode": "standard", "max_attempts": 1}, **config),
        )

    def env(self) -> dict[str, str]:
        """The environment that points boto3 (in a subprocess) at this server with the admin's credentials."""
        return {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "AWS_ENDPOINT_URL_S3": self.url,
            "AWS_ENDPOINT_URL_LAMBDA": self.url,
            "AWS_ENDPOINT_URL_STS": self.url,
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": REGION,
        }

    def user(self, name: str, policy: dict) -> tuple[str, str]:
        """Create an IAM user with one inline policy; its (access key id, secret)."""
        iam = self.client("iam")
        iam.create_user(UserName=name)
        self.set_policy(name, policy)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def set_policy(self, user: str, policy: dict) -> None:
        """Replace a user's inline policy (moto applies it to the next request)."""
        self.client("iam").put_user_policy(UserName=user, PolicyName="cosmicai", PolicyDocument=json.dumps(policy))


@contextlib.contextmanager
def running_moto(tmp: Path, enforce_iam: bool = False) -> Iterator[Moto]:
    """Start moto_server on a free port; with `enforce_iam`, S3 calls are checked against IAM users' policies.

    Enforcement starts after INITIAL_NO_AUTH_ACTION_COUNT requests: the first three create the admin
    (user, allow-all policy, access key) whose credentials every later setup call uses.
    """
    port, log = free_port(), tmp / "moto.log"
    env = {**os.environ, **({"INITIAL_NO_AUTH_ACTION_COUNT": "3"} if enforce_iam else {})}
    proc = subprocess.Popen([moto_server(), "-H", "127.0.0.1", "-p", str(port)], stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    try:
        _wait_port(port, proc, log)
        moto = Moto(f"http://127.0.0.1:{port}")
        if enforce_iam:
            iam = moto.client("iam")
            iam.create_user(UserName="admin")
            iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps(ALLOW_ALL))
            key = iam.create_access_key(UserName="admin")["AccessKey"]
            moto = Moto(moto.url, key["AccessKeyId"], key["SecretAccessKey"])
        yield moto
    finally:
        stop(proc)
