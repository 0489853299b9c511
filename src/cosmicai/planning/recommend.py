"""The recommendation: across a sweep, the cheapest plan that meets a deadline, or the fastest within a budget.

With a deadline (and perhaps a budget): the cheapest feasible plan that finishes in time and within the
budget, ties to the faster. With only a budget: the fastest feasible plan within it, ties to the cheaper.
A plan is feasible when no flag stops it (an invocation over the timeout, too little memory, a partition
larger than /tmp). Every other plan gets the reason it lost.
"""

from __future__ import annotations

import dataclasses

from cosmicai.errors import CosmicaiError
from cosmicai.planning.model import Plan
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
        return "cannot run: " + "; ".join(f for f in p.flags if not f.startswith("CONCURRENCY"))
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
        if p.feasible and (deadline_s is None or p.wall_s <= deadline_s) and (budget_usd is None or p.cost_usd <= budget_usd)
    ]
    if deadline_s is not None:
        goal = f"the cheapest within {human_time(deadline_s)}" + (f" and ${budget_usd:.2f}" if budget_usd is not None else "")
        best = min(ok, key=lambda p: (p.cost_usd, p.wall_s), default=None)
    else:
        goal = f"the fastest within ${budget_usd:.2f}"
        best = min(ok, key=lambda p: (p.wall_s, p.cost_usd), default=None)
    return Recommendation(best, goal, [(p, _why(p, best, deadline_s, budget_usd)) for p in plans if p is not best])


def format_recommendation(rec: Recommendation, limit: int = 12) -> str:
    """The pick and why the others lost (the closest `limit` of them; a count of the rest)."""
    if rec.best is None:
        near = min((p for p, _ in rec.reasons if p.feasible), key=lambda p: (p.wall_s, p.cost_usd), default=None)
        hint = f"; the fastest that can run: {describe(near)}, {human_time(near.wall_s)}, ${near.cost_usd:.4f}" if near else ""
        return f"recommendation ({rec.goal}): none of {len(rec.reasons)} configurations qualifies{hint}"
    b = rec.best
    lines = [f"recommendation ({rec.goal}): {describe(b)}: {b.jobs:,} jobs, wall {human_time(b.wall_s)}, ${b.cost_usd:.4f} ({b.usage()})"]
    ranked = sorted(rec.reasons, key=lambda pr: (not pr[0].feasible, pr[0].cost_usd, pr[0].wall_s))
    for p, why in ranked[:limit]:
        lines.append(f"  - {describe(p)}: {why}")
    if len(ranked) > limit:
        lines.append(f"  ... and {len(ranked) - limit} more (the full sweep: --output FILE.csv)")
    return "\n".join(lines)


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
