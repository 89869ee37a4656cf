"""Figures the tests gather for the end of the run."""

from __future__ import annotations

# Seconds from the end of a fault until every open tab held the truth, per test; printed
# at the end of the run (the README's outage guarantees quote them).
STALENESS: dict[str, float] = {}
