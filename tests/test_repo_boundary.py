"""Nothing in the repository may refer to a path outside it: a fresh clone must be self-sufficient."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

RELATIVE = re.compile(r"(?<![\w./])((?:\.\./)+)")  # ../, ../../ ...
PARENTS = re.compile(r"__file__\)\.resolve\(\)\.parents\[(\d+)\]")
ABOVE_ROOT = re.compile(r"\b(?:REPO|REPO_ROOT|ROOT)\.parent\b")
ABSOLUTE = re.compile(r"(?<![\w.:/])/(?:work|home|root|mnt)/[\w.-]+")


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [REPO / name for name in out.decode().split("\0") if name]


def escapes(path: Path, line: str) -> list[str]:
    """The references in one line of `path` that resolve outside the repository."""
    found = []
    for m in RELATIVE.finditer(line):
        target = (path.parent / m.group(1)).resolve()
        if not target.is_relative_to(REPO):
            found.append(f"{m.group(1)} climbs above the repository")
    for m in PARENTS.finditer(line):
        if int(m.group(1)) >= len(path.relative_to(REPO).parts):
            found.append(f"parents[{m.group(1)}] is outside the repository")
    found += [f"{m.group(0)} is the parent of the repository" for m in ABOVE_ROOT.finditer(line)]
    found += [f"absolute path {m.group(0)}" for m in ABSOLUTE.finditer(line)]
    return found


def test_escapes_are_detected(tmp_path: Path) -> None:
    here = REPO / "tests" / "x.py"
    assert escapes(here, 'TSV = Path(__file__).resolve().parents[2] / "shared"')
    assert escapes(here, 'p = REPO.parent / "shared"')
    assert escapes(here, 'open("../../shared/reference/a.tsv")')
    assert escapes(here, 'open("/work/shared/x")')
    assert not escapes(REPO / "rules" / "a.smk", 'conda: "../envs/cosmicai.yaml"')
    assert not escapes(here, 'Path(__file__).resolve().parents[1] / "data"')


def test_nothing_refers_outside_the_repository() -> None:
    problems = []
    for path in tracked_files():
        if path == Path(__file__).resolve() or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            problems += [f"{path.relative_to(REPO)}:{number}: {why}" for why in escapes(path, line)]
    assert not problems, "references outside the repository:\n" + "\n".join(problems)
