"""One evaluation result as a line of text, the same in ``bench show`` and ``bench eval``."""

from __future__ import annotations


def result_line(name: str, row: dict, width: int) -> str:
    """``  pgd10      41.20%  (n=500), worst class 3: 12.00%``: the name padded to ``width``."""
    return f"  {name:<{width}} {100 * row['accuracy']:6.2f}%  (n={row['n']}){worst_class(row)}"


def worst_class(row: dict) -> str:
    """``, worst class 3: 41.00%`` for a result row with per-class accuracies, else nothing."""
    per_class = [(v, c) for c, v in enumerate(row.get("per_class") or []) if v is not None]
    if not per_class:
        return ""
    value, cls = min(per_class)
    return f", worst class {cls}: {100 * value:.2f}%"
