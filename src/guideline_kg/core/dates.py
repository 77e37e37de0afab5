"""Date arithmetic shared by the FHIR mapping (in and out) and the cohort generator: one definition of a month."""

from __future__ import annotations

import calendar
from datetime import date

__all__ = ["months_between"]


def months_between(start: date, end: date) -> float:
    """Calendar months from ``start`` to ``end``, with the remaining days as a fraction of the next month."""
    months = (end.year - start.year) * 12 + end.month - start.month
    if end.day < start.day:
        months -= 1
    year, month = start.year + (start.month - 1 + months) // 12, (start.month - 1 + months) % 12 + 1
    days_in = calendar.monthrange(year, month)[1]
    anchor = date(year, month, min(start.day, days_in))
    return months + (end - anchor).days / days_in
