"""The one error type the CLI turns into a one-line message and a non-zero exit, and one-line error messages."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class CosmicaiError(Exception):
    """A user-facing failure: the message names the file and what is wrong with it."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


MESSAGE_CHARS = 200  # a remote message longer than this is cut: the line must stay one line


def first_line(text: str) -> str:
    """The first meaningful line of a remote error body: markup removed, blank and boilerplate lines skipped, cut short."""
    import html
    import re

    text = re.sub(r"(?is)<(script|style|head)\b.*?</\1>", " ", text)  # an HTML page's title and scripts are not the message
    text = html.unescape(re.sub(r"(?s)<[^>]*>", "\n", text))
    for line in text.splitlines():
        line = " ".join(line.split())
        if line and not line.lower().startswith(("<!doctype", "<?xml")):
            return line if len(line) <= MESSAGE_CHARS else line[: MESSAGE_CHARS - 1] + "…"
    return ""


def remote_message(code: str, status: int, message: str, note: str = "") -> str:
    """`CODE: first line (HTTP status[, note])` for an error a service answered; the body trimmed to its first meaningful line."""
    line = first_line(message)
    return f"{code or status}{': ' + line if line else ''} (HTTP {status}{', ' + note if note else ''})"


def fold(msg: str) -> str:
    """A message on one line: runs of whitespace, newlines included, as one space."""
    return " ".join(msg.split())


class _Member(Protocol):
    name: str
    jobid: int


class _Group(Protocol):
    groupid: str
    jobs: Iterable[_Member]


def group_error_line(group: _Group, msg: str | None) -> str:
    """A group job's error on one line: the group, its rules with their job ids, the reason.

    The executor plugins print it instead of Snakemake's group error, which drops the reason and shows
    `message: None` for each member (snakemake/snakemake#4248).
    """
    jobs = ", ".join(f"{name} jobid {jobid}" for name, jobid in sorted((j.name, j.jobid) for j in group.jobs))
    return f"Error in group {group.groupid} ({jobs}): {fold(msg or '') or 'no reason given'}"
