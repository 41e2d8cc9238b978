"""GLUE metrics against hand-computed values and independent re-computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from namex_bench.metrics.glue import GLUE_TASKS, canonical_task, glue_metrics

# A 2×2 example used throughout (positive class 1):
#   labels      1 1 1 1 0 0
#   predictions 1 1 1 0 1 0
#   TP = 3 (first three), FN = 1 (4th), FP = 1 (5th), TN = 1 (6th)
LABELS = [1, 1, 1, 1, 0, 0]
PREDS = [1, 1, 1, 0, 1, 0]


def test_task_table_matches_glue_definitions():
    assert GLUE_TASKS["cola"] == {"matthews_correlation": "max"}
    for task in ("sst2", "mnli_matched", "mnli_mismatched", "qnli", "rte", "wnli"):
        assert GLUE_TASKS[task] == {"accuracy": "max"}
    assert GLUE_TASKS["mrpc"] == GLUE_TASKS["qqp"] == {"f1": "max", "accuracy": "max"}
    assert GLUE_TASKS["stsb"] == {"pearson": "max", "spearman": "max"}
    assert all(goal == "max" for metrics in GLUE_TASKS.values() for goal in metrics.values())


def test_matthews_correlation_by_hand():
    # MCC = (TP·TN − FP·FN) / √((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (3·1 − 1·1) / √(4·4·2·2) = 2/8
    assert glue_metrics("cola", PREDS, LABELS) == {"matthews_correlation": pytest.approx(0.25)}
    # symmetric case: TP=2, FN=1, FP=1, TN=2 → (4 − 1) / √(3·3·3·3) = 1/3
    assert glue_metrics("cola", [1, 1, 0, 0, 0, 1], [1, 1, 1, 0, 0, 0])["matthews_correlation"] == pytest.approx(1 / 3)
    # perfect and perfectly inverted predictions
    assert glue_metrics("cola", LABELS, LABELS)["matthews_correlation"] == pytest.approx(1.0)
    assert glue_metrics("cola", [1 - y for y in LABELS], LABELS)["matthews_correlation"] == pytest.approx(-1.0)
    # constant predictions: a zero factor in the denominator → 0 by convention
    assert glue_metrics("cola", [1] * 6, LABELS)["matthews_correlation"] == 0.0


def test_f1_uses_positive_class_one_and_accuracy_by_hand():
    # F1 = 2·TP / (2·TP + FP + FN) = 6 / 8; accuracy = (TP + TN) / n = 4 / 6
    for task in ("mrpc", "qqp"):
        out = glue_metrics(task, PREDS, LABELS)
        assert out == {"f1": pytest.approx(0.75), "accuracy": pytest.approx(4 / 6)}
    # with class 0 as the positive class F1 would be 2·1 / (2·1 + 1 + 1) = 0.5 — not what GLUE reports
    assert glue_metrics("mrpc", PREDS, LABELS)["f1"] != pytest.approx(0.5)
    # no positive predictions and no positive labels: F1 = 0 (no warning-driven NaN)
    assert glue_metrics("qqp", [0, 0], [0, 0]) == {"f1": 0.0, "accuracy": 1.0}


def test_accuracy_tasks_by_hand():
    for task in ("sst2", "qnli", "rte", "wnli"):
        assert glue_metrics(task, PREDS, LABELS) == {"accuracy": pytest.approx(4 / 6)}
    # MNLI has three classes: 3 of 5 right
    for task in ("mnli", "mnli_matched", "mnli_mismatched"):
        assert glue_metrics(task, [0, 1, 2, 2, 0], [0, 1, 2, 1, 1]) == {"accuracy": pytest.approx(3 / 5)}


def test_pearson_and_spearman_by_hand():
    # x = 1 2 3 4, y = 1 3 2 4: deviations ∓1.5 ∓0.5 …; Σ dx·dy = 2.25 − 0.25 − 0.25 + 2.25 = 4,
    # Σ dx² = Σ dy² = 5 → r = 4/5; the values are their own ranks, so ρ = 4/5 as well
    out = glue_metrics("stsb", [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0])
    assert out == {"pearson": pytest.approx(0.8), "spearman": pytest.approx(0.8)}
    # x = 1 2 3 10 (mean 4, dx = −3 −2 −1 6), y = 1 2 3 4 (dy = −1.5 −0.5 0.5 1.5):
    # Σ dx·dy = 4.5 + 1 − 0.5 + 9 = 14, Σ dx² = 50, Σ dy² = 5 → r = 14/√250; same order → ρ = 1
    out = glue_metrics("stsb", [1.0, 2.0, 3.0, 10.0], [1.0, 2.0, 3.0, 4.0])
    assert out["pearson"] == pytest.approx(14 / math.sqrt(250))
    assert out["spearman"] == pytest.approx(1.0)


def test_cross_check_against_independent_formulas():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.where(rng.random(500) < 0.7, y, 1 - y)
    tp, tn = int(((p == 1) & (y == 1)).sum()), int(((p == 0) & (y == 0)).sum())
    fp, fn = int(((p == 1) & (y == 0)).sum()), int(((p == 0) & (y == 1)).sum())
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert glue_metrics("cola", p, y)["matthews_correlation"] == pytest.approx(mcc)
    out = glue_metrics("qqp", p, y)
    assert out["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert out["accuracy"] == pytest.approx((tp + tn) / 500)

    x = rng.normal(size=300)
    s = x + rng.normal(size=300)
    out = glue_metrics("stsb", x, s)
    assert out["pearson"] == pytest.approx(np.corrcoef(x, s)[0, 1])
    ranks = lambda v: np.argsort(np.argsort(v))  # noqa: E731 (no ties in continuous data)
    assert out["spearman"] == pytest.approx(np.corrcoef(ranks(x), ranks(s))[0, 1])


def test_accepts_numpy_torch_and_task_spellings():
    expected = glue_metrics("mrpc", PREDS, LABELS)
    assert glue_metrics("MRPC", np.array(PREDS), torch.tensor(LABELS)) == expected
    assert glue_metrics("mrpc", torch.tensor(PREDS, dtype=torch.float32), LABELS) == expected  # integral floats
    assert canonical_task("SST-2") == "sst2" and canonical_task("STS-B") == "stsb"
    assert canonical_task("mnli-mm") == "mnli_mismatched"


@pytest.mark.parametrize(
    ("task", "preds", "labels", "message"),
    [
        ("squad", [1], [1], "unknown GLUE task"),
        ("sst2", [1, 0], [1], "2 predictions but 1 labels"),
        ("sst2", [], [], "no examples"),
        ("sst2", [[1, 0]], [[1, 0]], "one-dimensional"),
        ("rte", [1, 0], [1, -1], "class ids in 0..1"),  # GLUE's hidden test labels
        ("mnli", [3, 0], [1, 0], "class ids in 0..2"),
        ("sst2", [0.5, 1.0], [1, 0], "integer class ids"),
        ("stsb", [1.0, float("nan")], [1.0, 2.0], "finite"),
        ("stsb", [1.0], [1.0], "at least two"),
    ],
)
def test_errors(task, preds, labels, message):
    with pytest.raises(ValueError, match=message):
        glue_metrics(task, preds, labels)
