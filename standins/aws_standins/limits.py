"""What Lambda enforces on an execution environment, enforced here with the kernel where it lets us.

- CPU: a share proportional to memory (AWS: 1 vCPU at 1,769 MB, up to 6 at 10,240 MB), as a CFS
  quota in the environment's own cgroup (v1 `cpu.cfs_quota_us`, v2 `cpu.max`).
- Memory: `memory_mb` as the cgroup's hard limit (v1 `memory.limit_in_bytes`, v2 `memory.max`): the
  kernel's OOM killer ends the environment the moment it goes over, which the stand-in reports as
  Runtime.OutOfMemory (the cgroup's `oom_kill` counter says it was the limit).
- /tmp: a filesystem of `ephemeral_storage_mb` (a sparse ext4 image, loop-mounted at the
  environment's TMPDIR): writing past it fails with ENOSPC, as on AWS.

Each needs root and a writable cgroup hierarchy / loop devices (true on this project's machines, no
systemd needed). Where the kernel refuses, the stand-in falls back and says so once in its log: memory
becomes a polled RSS limit, CPU is not limited, /tmp has no size limit.
"""

from __future__ import annotations

import logging
import os
import subprocess
import uuid
from pathlib import Path

log = logging.getLogger("aws_standins")

MB_PER_VCPU = 1769  # AWS: memory buys CPU in proportion, one vCPU at 1,769 MB
MAX_VCPUS = 6
CFS_PERIOD_US = 100_000
CGROUP_FS = Path("/sys/fs/cgroup")


def vcpus(memory_mb: int) -> float:
    """The CPU share AWS gives a function of this memory size."""
    return min(MAX_VCPUS, memory_mb / MB_PER_VCPU)


def _own_cgroups() -> dict[str, Path]:
    """Where this process's cpu and memory cgroups are: {'cpu': dir, 'memory': dir}, or {'unified': dir} on v2."""
    found: dict[str, Path] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(","):
            if name in ("cpu", "memory") and (CGROUP_FS / name).is_dir():
                found[name] = CGROUP_FS / name / path.lstrip("/")
    if not found and (CGROUP_FS / "cgroup.controllers").is_file():
        path = next((line.split(":", 2)[2] for line in lines if line.startswith("0::")), "/")
        found["unified"] = CGROUP_FS / path.lstrip("/")
    return found


class Sandbox:
    """The kernel-side limits of one execution environment; `prefix` wraps its command to join the cgroups."""

    warned: set[str] = set()

    def __init__(self, name: str, memory_mb: int, ephemeral_mb: int, tmpdir: Path) -> None:
        self.name = f"cosmicai-standin-{name.replace('/', '-')}-{uuid.uuid4().hex[:6]}"
        self.memory_mb, self.ephemeral_mb, self.tmpdir = memory_mb, ephemeral_mb, tmpdir
        self.groups: dict[str, Path] = {}
        self.image: Path | None = None
        self.mounted = False

    @classmethod
    def _warn(cls, what: str, why: object) -> None:
        if what not in cls.warned:
            cls.warned.add(what)
            log.warning("stand-in: %s not enforced by the kernel here (%s); falling back", what, why)

    def setup(self) -> None:
        """Create the cgroups and mount /tmp; whatever the kernel refuses is left to the fallbacks."""
        quota = max(1000, int(CFS_PERIOD_US * vcpus(self.memory_mb)))
        limit = self.memory_mb * 1024 * 1024
        for controller, parent in _own_cgroups().items():
            group = parent / self.name
            try:
                group.mkdir()
                self.groups[controller] = group
                if controller == "cpu":
                    (group / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
                    (group / "cpu.cfs_quota_us").write_text(str(quota))
                elif controller == "memory":
                    (group / "memory.limit_in_bytes").write_text(str(limit))
                    if (group / "memory.memsw.limit_in_bytes").exists():
                        (group / "memory.memsw.limit_in_bytes").write_text(str(limit))
                else:  # v2
                    (group / "cpu.max").write_text(f"{quota} {CFS_PERIOD_US}")
                    (group / "memory.max").write_text(str(limit))
                    (group / "memory.swap.max").write_text("0")
            except OSError as exc:
                self._warn(f"{controller} cgroup limits", exc)
        self._mount_tmp()

    def _mount_tmp(self) -> None:
        self.image = self.tmpdir.with_name(self.tmpdir.name + ".img")
        try:
            with open(self.image, "wb") as f:
                f.truncate(self.ephemeral_mb * 1024 * 1024)  # sparse: takes disk only as it fills
            subprocess.run(
                ["mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-E", "nodiscard", "-m", "0", str(self.image)],
                check=True,
                capture_output=True,
            )
            subprocess.run(["mount", "-o", "loop", str(self.image), str(self.tmpdir)], check=True, capture_output=True)
            self.mounted = True
            os.chmod(self.tmpdir, 0o1777)
        except (OSError, subprocess.CalledProcessError) as exc:
            self._warn("/tmp size limit", getattr(exc, "stderr", b"") or exc)
            self.image.unlink(missing_ok=True)
            self.image = None

    @property
    def limits_memory(self) -> bool:
        """Whether the kernel enforces memory_mb (else the caller polls RSS)."""
        return "memory" in self.groups or "unified" in self.groups

    def prefix(self) -> list[str]:
        """A command prefix that moves the process into the cgroups, then execs the real command."""
        if not self.groups:
            return []
        files = " ".join(str(g / "cgroup.procs") for g in self.groups.values())
        return ["/bin/sh", "-c", f'for f in {files}; do echo $$ > "$f"; done; exec "$@"', "sandbox"]

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer acted in this environment's memory cgroup."""
        for name, file in (("memory", "memory.oom_control"), ("unified", "memory.events")):
            group = self.groups.get(name)
            if group is None:
                continue
            try:
                for line in (group / file).read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and int(value) > 0:
                        return True
            except (OSError, ValueError):
                continue
        return False

    def close(self) -> None:
        """Unmount /tmp and remove the cgroups (the process must have exited)."""
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.tmpdir)], capture_output=True)
            self.mounted = False
        if self.image is not None:
            self.image.unlink(missing_ok=True)
        for group in self.groups.values():
            try:
                group.rmdir()
            except OSError:
                pass
        self.groups = {}
