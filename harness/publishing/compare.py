"""``bench compare A B``: two runs side by side: config, results and provenance, every line
where they differ marked ``≠`` (results with the difference B − A in points)."""

from __future__ import annotations

import math
from typing import Any

from tabulate import tabulate

from harness.store.listing import stale
from harness.store.store import Store
from harness.utils.values import canonical_json, flatten

DIFFER = "≠"


def _text(key: str, value: Any, missing: bool = False) -> str:
    if missing:
        return "—"
    if isinstance(value, float):
        scaled = value * 255
        if key.endswith(("eps", "step_size")) and value and abs(scaled - round(scaled)) < 1e-6:
            return f"{round(scaled)}/255"
        return f"{value:g}"
    if isinstance(value, str):
        return value
    return canonical_json(value)


def side_by_side(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, str]]:
    """One line per key of either flattened table: the two values and ``≠`` where they differ."""
    fa, fb = flatten(a), flatten(b)
    rows = []
    for key in sorted(set(fa) | set(fb)):
        same = key in fa and key in fb and canonical_json(fa[key]) == canonical_json(fb[key])
        rows.append(
            {
                "": "" if same else DIFFER,
                "key": key,
                "A": _text(key, fa.get(key), key not in fa),
                "B": _text(key, fb.get(key), key not in fb),
            }
        )
    return rows


def result_rows(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, str]]:
    """Accuracy (%) per attack of either run, B − A, ``≠`` where they differ."""
    ra, rb = a.get("results", {}), b.get("results", {})
    rows = []
    for attack in sorted(set(ra) | set(rb)):
        va = 100 * ra[attack]["accuracy"] if attack in ra else None
        vb = 100 * rb[attack]["accuracy"] if attack in rb else None
        both = va is not None and vb is not None
        delta = vb - va if both else None
        same = both and math.isclose(va, vb, abs_tol=1e-9)
        rows.append(
            {
                "": "" if same else DIFFER,
                "attack": attack,
                "A %": f"{va:.2f}" if va is not None else "—",
                "B %": f"{vb:.2f}" if vb is not None else "—",
                "B − A": f"{delta:+.2f}" if delta is not None else "—",
            }
        )
    return rows


def _provenance(config: dict[str, Any], metrics: dict[str, Any], now: dict) -> dict[str, Any]:
    prov = metrics.get("provenance", {})
    code = prov.get("method_code") or {}
    return {
        "code": prov.get("code"),
        "method code sha256": (code.get("sha256") or "")[:12] or None,
        "method code dirty": code.get("dirty"),
        "method code stale": stale(config, prov, now),
        "torch": (prov.get("packages") or {}).get("torch"),
        "device": prov.get("gpu") or prov.get("device"),
        "wall time s": round(metrics["wall_time_s"], 1) if metrics.get("wall_time_s") else None,
        "best epoch": (metrics.get("train") or {}).get("best_epoch"),
    }


def compare_text(store: Store, ref_a: str, ref_b: str) -> str:
    """The comparison of the runs ``ref_a`` and ``ref_b`` (ids or unique prefixes), as text."""
    ids = [store.resolve(ref_a), store.resolve(ref_b)]
    configs = [store.config(i) for i in ids]
    metrics = [store.metrics(i) for i in ids]
    statuses = [store.status(i) for i in ids]
    now: dict[str, Any] = {}
    config_rows = side_by_side(*configs)
    n_config = sum(r[""] == DIFFER for r in config_rows)
    results = result_rows(*metrics)
    prov = side_by_side(*(_provenance(c, m, now) for c, m in zip(configs, metrics)))
    parts = [
        f"A  {ids[0]}  ({statuses[0]})",
        f"B  {ids[1]}  ({statuses[1]})",
        "",
        f"config: {n_config} of {len(config_rows)} key(s) differ ({DIFFER})",
        tabulate(config_rows, headers="keys", tablefmt="simple", disable_numparse=True),
        "",
        "results (accuracy %)",
        tabulate(results, headers="keys", tablefmt="simple", disable_numparse=True)
        if results
        else "(no results in either run)",
        "",
        "provenance",
        tabulate(prov, headers="keys", tablefmt="simple", disable_numparse=True),
    ]
    return "\n".join(parts)
