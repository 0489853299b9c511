"""Quantities as people write them (12.6GB, 10min, 5USD, 25,50,75 or 2048:10240:2048), and back."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from cosmicai.errors import CosmicaiError

_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgtp]?)(i?b)?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(s|sec|min|m|h|hr|d)?\s*$", re.IGNORECASE)
_SECONDS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}
_MONEY = re.compile(r"^\s*\$?\s*([0-9]*\.?[0-9]+)\s*(usd|\$)?\s*$", re.IGNORECASE)


def number(text: object, what: str, low: float = 0.0, high: float = math.inf, integer: bool = False, open_low: bool = True) -> float:
    """A finite number in range (above `low`, or at least it when not `open_low`; at most `high`), else one-line error."""
    try:
        value = float(str(text).strip())
    except ValueError:
        raise CosmicaiError(what, f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise CosmicaiError(what, f"must be a finite number, got {text!r}")
    if integer and value != int(value):
        raise CosmicaiError(what, f"must be a whole number, got {text!r}")
    if (value <= low if open_low else value < low) or value > high:
        bound = f"> {low:g}" if open_low else f">= {low:g}"
        raise CosmicaiError(what, f"must be {bound}" + (f" and <= {high:g}" if math.isfinite(high) else "") + f", got {text!r}")
    return int(value) if integer else value


def parse_size(text: str, what: str = "--data-size") -> float:
    """Bytes in '12.6GB', '1TB', '500MiB', '1e9' (binary units, as the paper and partition_mb count: 1 GB = 2**30 B); > 0, finite."""
    m = _SIZE.match(text)
    if not m:
        try:
            float(text)
        except ValueError:
            raise CosmicaiError(what, f"not a size: {text!r} (examples: 12.6GB, 1TB, 500MB)") from None
        return number(text, what)
    return number(float(m.group(1)) * _UNITS[m.group(2).lower()], what)


def parse_duration(text: str, what: str = "--deadline") -> float:
    """Seconds in '10min', '90s', '2h', '600'."""
    m = _DURATION.match(text)
    if not m:
        raise CosmicaiError(what, f"not a duration: {text!r} (examples: 600s, 10min, 2h)")
    return number(float(m.group(1)) * _SECONDS[m.group(2).lower() if m.group(2) else None], what)


def parse_money(text: str, what: str = "--budget") -> float:
    """US dollars in '5USD', '$5', '0.38'."""
    m = _MONEY.match(text)
    if not m:
        raise CosmicaiError(what, f"not an amount in USD: {text!r} (examples: 5USD, $0.40)")
    return number(m.group(1), what)


def parse_values(text: str, what: str, parse: Callable[[str], float] | None = None) -> list[float]:
    """A list of values: 'a,b,c', a range 'start:stop:step' (stop included), or a mix ('1GB,2GB:10GB:4GB')."""
    parse = parse or (lambda t: number(t, what))
    values: list[float] = []
    for item in (part.strip() for part in str(text).split(",")):
        if not item:
            raise CosmicaiError(what, f"empty value in {text!r}")
        if ":" not in item:
            values.append(parse(item))
            continue
        bits = item.split(":")
        if len(bits) != 3:
            raise CosmicaiError(what, f"a range is start:stop:step, got {item!r}")
        start, stop, step = (parse(b) for b in bits)
        if not step > 0 or stop < start:
            raise CosmicaiError(what, f"range {item!r} must have step > 0 and stop >= start")
        n = int((stop - start) / step + 1e-9)
        values += [start + i * step for i in range(n + 1)]
    return list(dict.fromkeys(values))  # in the order given, each once


def human_size(nbytes: float) -> str:
    """'12.6 GiB' style."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            value = f"{nbytes / scale:.3g}"
            return f"{value if 'e' not in value else f'{nbytes / scale:,.0f}'} {unit}"  # 1,024 GiB, not 1.02e+03 GiB
    return f"{nbytes:.0f} B"


def human_time(seconds: float) -> str:
    """'28 s', '3 min 12 s', '2 h 05 min'."""
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
