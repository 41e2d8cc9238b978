"""GLUE metrics, as GLUE defines them (Wang et al., 2019), computed with scikit-learn and SciPy.

With ``TP, FP, TN, FN`` the confusion counts for the positive class (label 1):

    accuracy = (TP + TN) / n                      (any number of classes: mean of [ŷ_i = y_i])
    F1       = 2·TP / (2·TP + FP + FN)            (positive class 1; 0 when TP + FP + FN = 0)
    MCC      = (TP·TN − FP·FN) / √((TP+FP)(TP+FN)(TN+FP)(TN+FN))   (0 when a factor is 0)
    Pearson  r = Σ (x_i − x̄)(y_i − ȳ) / √(Σ (x_i − x̄)² · Σ (y_i − ȳ)²)
    Spearman ρ = Pearson r of the ranks (ties get their average rank)

Per task (all goals "max"):

    CoLA                               → Matthews correlation      (sklearn.metrics.matthews_corrcoef)
    SST-2, MNLI (m / mm), QNLI, RTE, WNLI → accuracy               (sklearn.metrics.accuracy_score)
    MRPC, QQP                          → F1 (positive class 1) and accuracy (sklearn.metrics.f1_score)
    STS-B                              → Pearson and Spearman      (scipy.stats.pearsonr / spearmanr)

Predictions are class ids (already arg-maxed) for the classification tasks and real-valued
similarity scores for STS-B. Labels must be the public ones: GLUE's hidden test labels (-1)
are rejected. A correlation is undefined (NaN) when either side is constant; SciPy's NaN is
returned as is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats
from sklearn import metrics as skm

# task → {metric name: goal}; the first metric is the task's headline metric.
GLUE_TASKS: dict[str, dict[str, str]] = {
    "cola": {"matthews_correlation": "max"},
    "sst2": {"accuracy": "max"},
    "mrpc": {"f1": "max", "accuracy": "max"},
    "qqp": {"f1": "max", "accuracy": "max"},
    "stsb": {"pearson": "max", "spearman": "max"},
    "mnli": {"accuracy": "max"},
    "mnli_matched": {"accuracy": "max"},
    "mnli_mismatched": {"accuracy": "max"},
    "qnli": {"accuracy": "max"},
    "rte": {"accuracy": "max"},
    "wnli": {"accuracy": "max"},
}

# The label sets of the classification tasks (STS-B is a regression task: scores in [0, 5]).
_NUM_CLASSES = {"cola": 2, "sst2": 2, "mrpc": 2, "qqp": 2, "mnli": 3, "mnli_matched": 3, "mnli_mismatched": 3,
                "qnli": 2, "rte": 2, "wnli": 2}
_ALIASES = {"sst_2": "sst2", "sts_b": "stsb", "mnli_m": "mnli_matched", "mnli_mm": "mnli_mismatched"}


def canonical_task(task: str) -> str:
    """``task`` as a key of ``GLUE_TASKS`` (case-insensitive; ``SST-2`` and ``STS-B`` are accepted)."""
    key = task.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in GLUE_TASKS:
        raise ValueError(f"unknown GLUE task {task!r}; known: {', '.join(GLUE_TASKS)}")
    return key


def _as_1d(values, what: str) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, possibly on an accelerator
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {array.shape}")
    return array


def _class_ids(values: np.ndarray, num_classes: int, what: str) -> np.ndarray:
    if values.dtype.kind not in "iub":
        if values.dtype.kind != "f" or not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
            raise ValueError(f"{what} must be integer class ids")
    ids = values.astype(np.int64)
    bad = (ids < 0) | (ids >= num_classes)
    if bad.any():
        raise ValueError(f"{what} must be class ids in 0..{num_classes - 1}; got {sorted(set(ids[bad].tolist()))}")
    return ids


def glue_metrics(task: str, predictions: Sequence, labels: Sequence) -> dict[str, float]:
    """The GLUE metrics of ``task`` (see ``GLUE_TASKS``) for ``predictions`` against ``labels``."""
    key = canonical_task(task)
    preds, golds = _as_1d(predictions, "predictions"), _as_1d(labels, "labels")
    if len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predictions but {len(golds)} labels")
    if len(preds) == 0:
        raise ValueError("no examples to score")

    if key == "stsb":
        x, y = preds.astype(np.float64), golds.astype(np.float64)
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise ValueError("STS-B predictions and labels must be finite numbers")
        if len(x) < 2:
            raise ValueError("Pearson and Spearman correlations need at least two examples")
        return {"pearson": float(stats.pearsonr(x, y)[0]), "spearman": float(stats.spearmanr(x, y)[0])}

    k = _NUM_CLASSES[key]
    y_pred, y_true = _class_ids(preds, k, "predictions"), _class_ids(golds, k, "labels")
    out: dict[str, float] = {}
    for name in GLUE_TASKS[key]:
        if name == "matthews_correlation":
            value = skm.matthews_corrcoef(y_true, y_pred)
        elif name == "f1":
            value = skm.f1_score(y_true, y_pred, pos_label=1, average="binary", zero_division=0.0)
        else:  # accuracy
            value = skm.accuracy_score(y_true, y_pred)
        out[name] = float(value)
    return out
