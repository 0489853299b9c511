"""Every command the README and the docs site show works, and the configuration reference matches the schema.

Commands are collected from the ```bash blocks of README.md and docs/**/*.md (docs/incoming/ excluded: notes
for the lead, not pages) and run the cheapest way that still checks them: `snakemake` as a dry-run in a
copy of the workflow (each profile's first command in `make test`; the others, and a real run of the local
ones on the tiny dataset, are slow), `cosmicai plan` and `cosmicai --help` as written, other `cosmicai`
commands and `python -m cosmicai.…` modules (the benchmarks) with `--help` appended (the subcommand and the
options before it must parse), `make` as `make -n`.
A non-zero exit or a traceback fails.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cli import BIN, REPO, env_with_venv
from helpers.slurm import slurm_status

PAGES = [REPO / "README.md", *sorted(p for p in (REPO / "docs").rglob("*.md") if "incoming" not in p.parts)]
TOOLS = {"snakemake", "cosmicai", "make", "python"}  # python only as `python -m cosmicai.…`
OPERATORS = {"&&", "||", "|", ";", "&", ">", ">>", "<", "2>", "2>&1"}
BLOCK = re.compile(r"^(?P<indent>[ \t]*)```bash\n(?P<body>.*?)^(?P=indent)```", re.S | re.M)
# Paths the docs use for the reader's own files, and what stands in for them here.
STAND_INS = {"/data/sdss.h5": "tiny_dataset", "/models/astromae.safetensors": "random_checkpoint"}
SLURM_PROFILES = ("profiles/slurm", "profiles/slurm-gpu")


def bash_commands(text: str) -> list[list[str]]:
    """The snakemake/cosmicai/make command lines of the text's ```bash blocks, as argument lists."""
    found = []
    for block in BLOCK.finditer(text):
        body = block["body"].replace("\\\n", " ")
        for line in body.splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            lexer.commenters = "#"
            segment: list[str] = []
            for token in [*lexer, ";"]:
                if token not in OPERATORS:
                    segment.append(token)
                    continue
                while segment and re.match(r"^[A-Z_]+=", segment[0]):  # VAR=value before a command
                    segment.pop(0)
                if (
                    segment
                    and segment[0] in TOOLS
                    and (segment[0] != "python" or segment[1:3][:1] == ["-m"] and segment[2].startswith("cosmicai"))
                ):
                    found.append(segment)
                segment = []
    return found


def documented() -> list[tuple[str, list[str]]]:
    """(page, argv) for every distinct documented command, in page order (a command shown twice runs once)."""
    seen: dict[tuple[str, ...], str] = {}
    for page in PAGES:
        for argv in bash_commands(page.read_text()):
            seen.setdefault(tuple(argv), str(page.relative_to(REPO)))
    return [(page, list(argv)) for argv, page in seen.items()]


COMMANDS = documented()


def profile_of(argv: list[str]) -> str | None:
    """The --profile a snakemake command names."""
    return argv[argv.index("--profile") + 1] if "--profile" in argv[:-1] else None


def params() -> list:
    """One pytest param per command; a snakemake command after the first of its profile is slow (a dry-run
    reads the workflow: ~3 s alone, ~10 s on the shared machine), so `make test` tries each profile once."""
    seen, out = set(), []
    for page, argv in COMMANDS:
        key = profile_of(argv) if argv[0] == "snakemake" else None
        marks = [pytest.mark.slow] if key is not None and key in seen else []
        seen.add(key)
        out.append(pytest.param(page, argv, marks=marks, id=f"{page}:{shlex.join(argv)[:70]}"))
    return out


def test_commands_are_collected_from_every_kind_of_block() -> None:
    text = "```bash\nA=1 snakemake -n --profile p  # note\ncosmicai plan \\\n  --x 1 | head\nmake test && echo\npython -m cosmicai.bench.s3_read --mib 1\npython x.py\n```\n"
    assert bash_commands(text) == [
        ["snakemake", "-n", "--profile", "p"],
        ["cosmicai", "plan", "--x", "1"],
        ["make", "test"],
        ["python", "-m", "cosmicai.bench.s3_read", "--mib", "1"],
    ]
    assert bash_commands("  ```bash\n  cosmicai --help\n  ```\n") == [["cosmicai", "--help"]]
    tools = {argv[0] for _, argv in COMMANDS}
    assert tools == TOOLS, tools
    assert len(COMMANDS) >= 20, COMMANDS


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the workflow, its configs and profiles: the docs' commands run from a checkout's root."""
    root = tmp_path_factory.mktemp("docs-run")
    for name in ("workflow", "config", "profiles", "deploy"):
        shutil.copytree(REPO / name, root / name)
    return root


def substituted(argv: list[str], request: pytest.FixtureRequest) -> list[str]:
    """The command with the docs' example paths replaced by the test's stand-ins."""
    out = []
    for arg in argv:
        for path, fixture in STAND_INS.items():
            if path in arg:
                arg = arg.replace(path, str(request.getfixturevalue(fixture)))
        out.append(arg)
    return out


def how_to_run(argv: list[str]) -> tuple[list[str], str]:
    """The command as the test runs it, and where (repo: the checkout; work: the workflow copy)."""
    tool = argv[0]
    if tool == "make":
        return ["make", "-n", *argv[1:]], "repo"
    if tool == "python":  # python -m cosmicai.<module> from the checkout's root, as the docs say
        return [sys.executable, *argv[1:], "--help"], "repo"
    if tool == "cosmicai":
        exe = str(BIN / "cosmicai")
        if argv[1:2] in (["plan"], ["--help"]):
            return [exe, *argv[1:]], "work"
        return [exe, *argv[1:], "--help"], "work"
    exe = str(BIN / "snakemake")
    rest = [a for a in argv[1:] if a not in ("-n", "--dry-run", "--dryrun")]
    return [exe, "-n", *rest], "work"


def check_ran(proc: subprocess.CompletedProcess, cmd: list[str]) -> None:
    """Exit 0 and no traceback."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Traceback (most recent call last)" not in out, f"{shlex.join(cmd)}\n{out[-4000:]}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("page", "argv"), params())
def test_documented_command_runs(page: str, argv: list[str], workdir: Path, request: pytest.FixtureRequest) -> None:
    if any(p in argv for p in SLURM_PROFILES) and not slurm_status()[0]:
        pytest.skip("the Slurm profiles' plan asks sinfo: needs the local Slurm (bash scripts/slurm-local.sh start)")
    cmd, where = how_to_run(substituted(argv, request))
    cwd = REPO if where == "repo" else workdir
    if "--report" in cmd:  # a report needs a finished run: the slow test makes one; here the DAG must build
        cmd = cmd[: cmd.index("--report")] + cmd[cmd.index("--report") + 2 :]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env_with_venv(), timeout=110, check=False)
    check_ran(proc, cmd)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_documented_local_runs_really_run(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The documented local-profile runs, for real on the tiny dataset and a random checkpoint, then the report."""
    for name in ("workflow", "config", "profiles"):
        shutil.copytree(REPO / name, tmp_path / name)
    tiny = {"dataset": request.getfixturevalue("tiny_dataset"), "checkpoint": request.getfixturevalue("random_checkpoint")}
    runs = [a for _, a in COMMANDS if a[0] == "snakemake" and "profiles/local" in a and "-n" not in a and "--report" not in a]
    reports = [a for _, a in COMMANDS if a[0] == "snakemake" and "profiles/local" in a and "--report" in a]
    assert runs and reports
    small = ["--config", f"dataset={tiny['dataset']}", f"checkpoint={tiny['checkpoint']}", "partition_mb=1"]
    for argv in [*runs, *reports]:
        cmd = [str(BIN / "snakemake"), *substituted(argv, request)[1:]]
        if "--config" not in cmd:
            cmd += small
        else:  # the command's own --config values, on the tiny data
            cmd = [c for c in cmd if not c.startswith(("dataset=", "checkpoint=", "partition_mb="))]
            cmd[cmd.index("--config") + 1 : cmd.index("--config") + 1] = small[1:]
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env_with_venv(), timeout=600, check=False)
        check_ran(proc, cmd)
    assert (tmp_path / "results" / "predictions.parquet").exists()
    assert (tmp_path / "report.html").exists()


def test_configuration_page_matches_the_schema() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "docs-config.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
