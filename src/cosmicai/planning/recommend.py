"""The recommendation: across a sweep, the cheapest plan that meets a deadline, or the fastest within a budget.

With a deadline (and perhaps a budget): the cheapest feasible plan that finishes in time and within the
budget, ties to the faster. With only a budget: the fastest feasible plan within it, ties to the cheaper.
A plan is feasible when no flag stops it (an invocation over the timeout, too little memory, a partition
larger than /tmp). A plan whose usage has no price (cost.cpu_hour_usd, cost.gpu_hour_usd unset) is never
counted as free: it cannot be picked, and its reason says which rate is missing. Every other plan gets the
reason it lost; when none qualifies, the line names the fastest and the cheapest plan and what dominates
them, and `cosmicai plan` exits non-zero.
"""

from __future__ import annotations

import dataclasses

from cosmicai.errors import CosmicaiError
from cosmicai.planning.estimate import BLOCKING, Plan
from cosmicai.planning.units import human_time


@dataclasses.dataclass
class Recommendation:
    """The pick (None when nothing qualifies), and why each other plan lost."""

    best: Plan | None
    goal: str
    reasons: list[tuple[Plan, str]]


def describe(p: Plan) -> str:
    """A plan's configuration in a few words."""
    s = p.settings
    what = f"{p.backend} {s.partition_mb:g} MB partitions"
    if p.backend == "lambda":
        what += f", {s.memory_mb} MB, concurrency {p.concurrency:,}"
    elif p.partitions_per_job > 1:
        what += f", {p.partitions_per_job} per job"
    return f"{what}, {s.precision}"


def _why(p: Plan, best: Plan | None, deadline_s: float | None, budget_usd: float | None) -> str:
    if not p.feasible:
        return "cannot run: " + "; ".join(f for f in p.flags if f.startswith(BLOCKING))
    if not p.priced and (budget_usd is not None or (best is not None and best.priced)):
        return f"cost unknown: {p.cost_text()} has no rate (config cost.*), never counted as free"
    if deadline_s is not None and p.wall_s > deadline_s:
        return f"misses the deadline: {human_time(p.wall_s)} > {human_time(deadline_s)}"
    if budget_usd is not None and p.cost_usd > budget_usd:
        return f"over budget: ${p.cost_usd:.4f} > ${budget_usd:.2f}"
    assert best is not None
    if deadline_s is not None:
        if p.cost_usd > best.cost_usd:
            return f"costs ${p.cost_usd - best.cost_usd:.4f} more (${p.cost_usd:.4f})"
        return f"as cheap, slower: {human_time(p.wall_s)}"
    if p.wall_s > best.wall_s:
        return f"slower by {human_time(p.wall_s - best.wall_s)} ({human_time(p.wall_s)})"
    return f"as fast, costs ${p.cost_usd:.4f}"


def recommend(plans: list[Plan], deadline_s: float | None = None, budget_usd: float | None = None) -> Recommendation:
    """The pick across `plans` for a deadline and/or a budget, with every other plan's reason."""
    if deadline_s is None and budget_usd is None:
        raise CosmicaiError("plan", "a recommendation needs --deadline and/or --budget")
    ok = [
        p
        for p in plans
        if p.feasible
        and (p.priced or budget_usd is None)  # an unpriced plan cannot be shown to fit a budget
        and (deadline_s is None or p.wall_s <= deadline_s)
        and (budget_usd is None or p.cost_usd <= budget_usd)
    ]
    priced = [p for p in ok if p.priced]
    if deadline_s is not None:
        goal = f"the cheapest within {human_time(deadline_s)}" + (f" and ${budget_usd:.2f}" if budget_usd is not None else "")
        # Unpriced plans are not free: only when no priced plan makes the deadline, the fastest of them (cost unknown).
        best = min(priced, key=lambda p: (p.cost_usd, p.wall_s), default=None) or min(ok, key=lambda p: p.wall_s, default=None)
    else:
        goal = f"the fastest within ${budget_usd:.2f}"
        best = min(ok, key=lambda p: (p.wall_s, p.cost_usd), default=None)
    return Recommendation(best, goal, [(p, _why(p, best, deadline_s, budget_usd)) for p in plans if p is not best])


def format_recommendation(rec: Recommendation, limit: int = 12) -> str:
    """The pick and why the others lost (the closest `limit` of them; a count of the rest)."""
    if rec.best is None:
        return f"recommendation ({rec.goal}): {none_qualifies(rec)}"
    b = rec.best
    lines = [f"recommendation ({rec.goal}): {describe(b)}: {b.jobs:,} jobs, wall {human_time(b.wall_s)}, {b.cost_text()} ({b.usage()})"]
    ranked = sorted(rec.reasons, key=lambda pr: (not pr[0].feasible, pr[0].cost_usd, pr[0].wall_s))
    for p, why in ranked[:limit]:
        lines.append(f"  - {describe(p)}: {why}")
    if len(ranked) > limit:
        lines.append(f"  ... and {len(ranked) - limit} more (the full sweep: --output FILE.csv)")
    return "\n".join(lines)


def _terms(p: Plan) -> str:
    return ", ".join(f"{name} {human_time(s)}" for name, s in p.biggest_terms(2))


def none_qualifies(rec: Recommendation) -> str:
    """Why nothing qualifies, in one line: the fastest plan that can run and what dominates it, and the cheapest priced one."""
    runnable = [p for p, _ in rec.reasons if p.feasible]
    if not runnable:
        return f"none of {len(rec.reasons)} configurations can run ({rec.reasons[0][1] if rec.reasons else 'no plans'})"
    fast = min(runnable, key=lambda p: (p.wall_s, p.cost_usd))
    text = (
        f"none of {len(rec.reasons)} configurations qualifies; the fastest: {describe(fast)}, {human_time(fast.wall_s)} "
        f"({fast.cost_text()}), dominated by {_terms(fast)}"
    )
    priced = [p for p in runnable if p.priced]
    if priced:
        cheap = min(priced, key=lambda p: (p.cost_usd, p.wall_s))
        text += f"; the cheapest: {describe(cheap)}, ${cheap.cost_usd:.4f} ({human_time(cheap.wall_s)}, dominated by {_terms(cheap)})"
    else:
        text += "; none is priced (set cost.cpu_hour_usd / cost.gpu_hour_usd)"
    return text


# The space a workflow's recommendation searches: the paper's partition sizes and Lambda's memory range.
WORKFLOW_PARTITION_MB = (25.0, 50.0, 75.0, 100.0)
WORKFLOW_MEMORY_MB = (2048, 4096, 6144, 8192, 10240)


def workflow_recommendation(base: Plan, calibrations: dict, deadline_s: float | None, budget_usd: float | None) -> str:
    """The recommendation a dry-run prints: over the paper's partition sizes (and Lambda memory sizes) for
    this run's data and backend; without a deadline or budget, the cheapest no slower than this run's settings."""
    from cosmicai.planning.sweep import Axes, sweep

    s = base.settings
    axes = Axes(
        partition_mb=tuple(dict.fromkeys((s.partition_mb, *WORKFLOW_PARTITION_MB))),
        memory_mb=tuple(dict.fromkeys((s.memory_mb, *WORKFLOW_MEMORY_MB))) if s.backend == "lambda" else (),
    )
    if deadline_s is None and budget_usd is None:
        deadline_s = base.wall_s
    return format_recommendation(recommend(sweep(s, axes, calibrations), deadline_s, budget_usd), limit=5)
