"""One priced line of a cost summary: what was used, how much, at what rate."""

from __future__ import annotations


def cost_line(resource: str, quantity: float, unit: str, rate: float) -> dict:
    """A cost-summary line: resource, quantity and unit, rate and the cost it comes to (USD)."""
    return {"resource": resource, "quantity": quantity, "unit": unit, "rate_usd": rate, "cost_usd": quantity * rate}
