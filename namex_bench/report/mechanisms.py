"""The mechanism table: did each method's own part reach the trained model's outputs?

A pure function of run records (their ``diagnostics``, written by ``tasks/diagnostics.py``):
per task/model, one row per method that has a part to ablate or Nash weights, one column per
ablation — mean |Δ logit| when that part is replaced by its neutral value in every MoE layer,
and the share of predictions that changed — plus the Nash weights' spread and the bargaining
solver's residual. Values are means over the seeds whose records hold diagnostics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from tabulate import tabulate

from .leaderboard import method_label, ok_records, task_model

Record = Mapping[str, Any]

#: Columns in this order first (the parts of the CAMEx → NAMEx-Mom line), then any other, by name.
ORDER = ("base", "curvature", "propagation", "nash_weights", "momentum")


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _ablation_cell(entries: list[Mapping[str, Any]]) -> str:
    delta = _mean(e.get("mean_abs_delta_logit") for e in entries)
    changed = _mean(e.get("changed_predictions") for e in entries)
    if delta is None:
        return ""
    return f"{delta:.2g}" + ("" if changed is None else f" ({100 * changed:.1f}%)")


def mechanism_rows(records: Iterable[Record], task: str, model: str) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)`` of the mechanism table of ``task``/``model`` (no rows: nothing to show)."""
    by_method: dict[str, list[Mapping[str, Any]]] = {}
    for record in ok_records(records):
        diagnostics = record.get("diagnostics") or {}
        if task_model(record) == (task, model) and (diagnostics.get("ablations") or diagnostics.get("layers")):
            by_method.setdefault(method_label(record), []).append(diagnostics)
    parts = {part for runs in by_method.values() for d in runs for part in d.get("ablations") or {}}
    columns = [p for p in ORDER if p in parts] + sorted(parts - set(ORDER))
    has_nash = any(d.get("layers") for runs in by_method.values() for d in runs)
    rows = []
    for method in sorted(by_method):
        runs = by_method[method]
        row = [method]
        for part in columns:
            row.append(_ablation_cell([d["ablations"][part] for d in runs if part in (d.get("ablations") or {})]))
        if has_nash:
            ratios = [min((layer.get("nash_min_max") or 1.0) for layer in d["layers"]) for d in runs if d.get("layers")]
            residuals = [layer.get("nash_residual") for d in runs for layer in d.get("layers") or [] if layer.get("nash_residual") is not None]
            row.append(f"{np.mean(ratios):.3g}" if ratios else "")
            row.append(f"{max(residuals):.1g}" if residuals else "")
        row.append(f"{_mean(d.get('logit_std') for d in runs) or 0:.2g}")
        row.append(str(len(runs)))
        rows.append(row)
    header = ["method", *(f"{part} off" for part in columns)]
    header += ["α̂ min/max", "NBS residual"] if has_nash else []
    return header + ["logit std", "n"], rows


def mechanism_section_markdown(records: Iterable[Record], task: str, model: str) -> str:
    """The "Mechanisms" subsection of a task/model's leaderboard ("" when no method has a part to ablate)."""
    records = list(records)
    header, rows = mechanism_rows(records, task, model)
    if not rows:
        return ""
    sources = sorted({str(((r.get("diagnostics") or {}).get("batch") or {}).get("source")) for r in ok_records(records)
                      if task_model(r) == (task, model) and r.get("diagnostics")})
    caption = (
        f"Each method's own parts switched off on the trained model, on a fixed batch ({'; '.join(sources)}): "
        "mean |Δ logit| when the part is replaced by its neutral value in every MoE layer, and in parentheses the "
        "share of predictions that change (mean over the n seeds). `α̂ min/max`: the Nash weights' smallest "
        "min/max ratio over the layers (1 = uniform); `NBS residual`: the solver's largest residual. A part whose "
        "Δ is far below the logits' spread (`logit std`) and that changes no prediction did not reach the output."
    )
    table = tabulate(rows, headers=header, tablefmt="github", disable_numparse=True)
    return "\n".join(["", "### Mechanisms", "", caption, "", table, ""])
