"""Function definitions for the Lambda stand-in, loaded from JSON/YAML or CLI flags.

Example (YAML; relative code_dirs are taken from the server's working directory):

    region: us-east-1
    functions:
      - name: cosmicai-infer
        handler: cosmicai.lambda_handler.handler
        memory_mb: 2048
        timeout_s: 300
        reserved_concurrency: 4
        code_dirs: [src]
        environment: {COSMICAI_LOG_LEVEL: INFO}
        faults: {throttle: 0.0, crash: 0.0, timeout: 0.0, oom: 0.0, lost_response: 0.0, service_error: 0.0, seed: 1}
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

# Environment the stand-in passes on to every worker, like the execution role's
# credentials and the region that real Lambda injects; everything else must be
# configured per function so workers do not silently depend on the caller's shell.
PASSTHROUGH_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)


FAULTS = ("throttle", "crash", "timeout", "oom", "lost_response", "service_error")


@dataclasses.dataclass
class Faults:
    """Per-invocation fault probabilities (0..1) for chaos tests; all off by default.

    Set with the function config or at runtime (POST /_standin/functions/NAME {"faults": {...}});
    GET /_standin/stats counts the faults injected.
    """

    throttle: float = 0.0  # answer 429 although capacity is free
    throttle_for_s: float = 0.0  # a storm: throttling stops this many seconds after its first 429 (0: until changed)
    crash: float = 0.0  # SIGKILL the worker right after it receives the event: Runtime.ExitError
    timeout: float = 0.0  # freeze the worker (SIGSTOP) once it has the event, so it runs into timeout_s: Sandbox.Timedout
    oom: float = 0.0  # the worker receives the event, then dies as if over memory_mb: Runtime.OutOfMemory
    lost_response: float = 0.0  # run the invocation, then drop the HTTP connection unanswered
    service_error: float = 0.0  # answer 500 ServiceException (Lambda's internal error) without running the function
    # For crash, timeout, oom, lost_response and service_error (throttling is bounded by throttle_for_s):
    max_hits: int | None = None  # each fires at most this many times (None: no limit)
    once_per_event: bool = False  # none fires on a payload already hit (a retry of the same event is spared)
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in FAULTS:
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"fault {name} must be a probability in 0..1, got {getattr(self, name)!r}")
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._storm_started: float | None = None
        self._hits = dict.fromkeys(FAULTS, 0)
        self._hit_events: set[int] = set()  # hashes of the payloads hit (once_per_event)

    def hit(self, name: str, payload: bytes | None = None) -> bool:
        """Draw whether fault `name` fires for this invocation (the payload identifies the event for once_per_event)."""
        p = float(getattr(self, name))
        if p <= 0:
            return False
        event = hash(payload) if payload is not None and self.once_per_event else None
        with self._lock:
            if name == "throttle":
                if self.throttle_for_s and self._storm_started is not None and time.monotonic() - self._storm_started > self.throttle_for_s:
                    return False
            elif self.max_hits is not None and self._hits[name] >= self.max_hits:
                return False
            elif event is not None and event in self._hit_events:
                return False
            if self._rng.random() >= p:
                return False
            self._hits[name] += 1
            if name == "throttle" and self._storm_started is None:
                self._storm_started = time.monotonic()
            elif event is not None:
                self._hit_events.add(event)
            return True

    def settings(self) -> dict[str, Any]:
        """The configured values (for merging a runtime patch)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclasses.dataclass
class FunctionConfig:
    """One stand-in function: what to run and the limits real Lambda would enforce."""

    name: str
    handler: str
    memory_mb: int = 128
    timeout_s: float = 3.0
    ephemeral_storage_mb: int = 512  # /tmp size, enforced where the kernel lets us (aws_standins.limits)
    architecture: str = "x86_64"  # reported by GetFunction (the stand-in runs this machine's)
    # process: one awslambdaric process per execution environment (faithful: limits, crashes, cold starts);
    # thread: the handler runs on a thread of the server itself, for scale tests of the dispatcher only
    # (1,000 environments would not fit as processes; no memory/CPU limits, crash/timeout/oom faults end the call only)
    mode: str = "process"
    retry_after_s: float = 1.0  # the Retry-After header of a 429
    reserved_concurrency: int | None = None  # None: only the server-wide limit applies
    environment: dict[str, str] = dataclasses.field(default_factory=dict)
    code_dirs: list[str] = dataclasses.field(default_factory=list)  # PYTHONPATH, first is cwd
    python: str = sys.executable
    idle_timeout_s: float = 600.0  # warm workers idle longer than this are reaped
    faults: Faults = dataclasses.field(default_factory=Faults)

    def __post_init__(self) -> None:
        if isinstance(self.faults, dict):
            self.faults = Faults(**self.faults)
        if "." not in self.handler:
            raise ValueError(f"function {self.name}: handler must be module.function, got {self.handler!r}")
        if not 128 <= int(self.memory_mb) <= 10240:
            raise ValueError(f"function {self.name}: memory_mb must be 128..10240 as on AWS")
        if not 512 <= int(self.ephemeral_storage_mb) <= 10240:
            raise ValueError(f"function {self.name}: ephemeral_storage_mb must be 512..10240 as on AWS")
        if self.mode not in ("process", "thread"):
            raise ValueError(f"function {self.name}: mode must be process or thread, got {self.mode!r}")
        # Relative code dirs are taken from the server's cwd, resolved now so workers can chdir.
        self.code_dirs = [str(Path(d).resolve()) for d in self.code_dirs]
        self.environment = {str(k): str(v) for k, v in self.environment.items()}

    def concurrency_limit(self, account_limit: int) -> int:
        """Maximum simultaneously busy workers for this function."""
        if self.reserved_concurrency is None:
            return account_limit
        return min(int(self.reserved_concurrency), account_limit)

    def apply(self, patch: dict[str, Any]) -> None:
        """Update fields from a JSON patch (admin endpoint); faults are merged."""
        for key, value in patch.items():
            if key == "faults":
                merged = {**self.faults.settings(), **value}
                self.faults = Faults(**merged)
            elif key in {"memory_mb", "timeout_s", "reserved_concurrency", "environment", "idle_timeout_s"}:
                setattr(self, key, value)
            else:
                raise ValueError(f"field {key!r} cannot be changed at runtime")


@dataclasses.dataclass
class ServerConfig:
    """Whole stand-in configuration: functions plus account-level settings."""

    functions: dict[str, FunctionConfig]
    region: str = "us-east-1"
    account_id: str = "123456789012"
    account_concurrency: int = 1000  # AWS's default regional limit


def load_config(path: str | None, cli_functions: list[dict[str, Any]]) -> ServerConfig:
    """Read a JSON/YAML config file (optional) and add functions given on the command line."""
    raw: dict[str, Any] = {}
    if path:
        text = Path(path).read_text()
        if path.endswith((".yaml", ".yml")):
            import yaml  # only needed for YAML configs

            raw = yaml.safe_load(text) or {}
        else:
            raw = json.loads(text)
    specs = list(raw.pop("functions", [])) + cli_functions
    functions = {}
    for spec in specs:
        fn = FunctionConfig(**spec)
        functions[fn.name] = fn
    return ServerConfig(functions=functions, **raw)


def parse_env_pairs(pairs: list[str]) -> dict[str, str]:
    """Turn ['K=V', ...] into a dict."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"expected KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def worker_base_env() -> dict[str, str]:
    """The part of the server's environment that workers inherit."""
    return {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
