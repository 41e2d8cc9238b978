"""mCE, relative mCE and the ImageNet-A/R 200-class restriction, against hand-computed values."""

from __future__ import annotations

import pkgutil

import pytest
import torch

from namex_bench.metrics.imagenet_subsets import imagenet1k_indices, imagenet1k_wnids, restricted_predictions
from namex_bench.metrics.mce import (
    ALEXNET_CLEAN_ERROR,
    ALEXNET_ERRORS,
    BENCHMARK_CORRUPTIONS,
    corruption_errors,
    mce,
    mean_corruption_error,
    relative_mce,
)


def test_alexnet_constants_cover_the_fifteen_benchmark_corruptions():
    assert tuple(ALEXNET_ERRORS) == BENCHMARK_CORRUPTIONS
    assert ALEXNET_ERRORS["gaussian_noise"] == 0.886 and ALEXNET_ERRORS["jpeg_compression"] == 0.607
    assert ALEXNET_CLEAN_ERROR == 0.4348


def test_ce_and_relative_ce_by_hand():
    # two corruptions, two severities; reference errors 0.8 and 0.5, reference clean 0.4
    errors = {("a", 1): 0.2, ("a", 2): 0.4, ("b", 1): 0.1, ("b", 2): 0.3}
    reference = {"a": 0.8, "b": 0.5}
    ce = corruption_errors(errors, reference)
    assert ce["a"] == pytest.approx((0.2 + 0.4) / (2 * 0.8))  # 0.375
    assert ce["b"] == pytest.approx((0.1 + 0.3) / (2 * 0.5))  # 0.4
    assert mce(errors, reference) == pytest.approx((0.375 + 0.4) / 2)
    rel = corruption_errors(errors, reference, clean_error=0.1, reference_clean=0.4)
    assert rel["a"] == pytest.approx(((0.2 - 0.1) + (0.4 - 0.1)) / (2 * (0.8 - 0.4)))  # 0.5
    assert rel["b"] == pytest.approx(((0.1 - 0.1) + (0.3 - 0.1)) / (2 * (0.5 - 0.4)))  # 1.0
    assert relative_mce(errors, 0.1, reference, 0.4) == pytest.approx(0.75)
    assert mean_corruption_error(errors) == pytest.approx(0.25)
    assert mean_corruption_error(errors, ["a"]) == pytest.approx(0.3)


def test_mce_with_alexnet_reference_is_one_for_alexnet_itself():
    errors = {(c, s): e for c, e in ALEXNET_ERRORS.items() for s in range(1, 6)}
    assert mce(errors) == pytest.approx(1.0)
    assert relative_mce(errors, ALEXNET_CLEAN_ERROR) == pytest.approx(1.0)
    # a model with half AlexNet's error everywhere has mCE 0.5
    assert mce({k: v / 2 for k, v in errors.items()}) == pytest.approx(0.5)


def test_mce_refuses_missing_corruptions():
    errors = {("gaussian_noise", s): 0.5 for s in range(1, 6)}
    with pytest.raises(ValueError, match="missing"):
        mce(errors)
    with pytest.raises(ValueError, match="missing"):
        relative_mce(errors, 0.2)


def test_imagenet1k_wnids_are_the_sorted_thousand():
    wnids = imagenet1k_wnids()
    assert len(wnids) == 1000 == len(set(wnids)) and wnids == sorted(wnids)
    assert wnids[0] == "n01440764"


@pytest.mark.parametrize("subset", ["imagenet_a", "imagenet_r"])
def test_subset_indices_agree_with_timms_lists(subset):
    synsets = pkgutil.get_data("timm.data", f"_info/{subset}_synsets.txt").decode().split()
    indices = [int(x) for x in pkgutil.get_data("timm.data", f"_info/{subset}_indices.txt").decode().split()]
    assert len(synsets) == 200
    assert imagenet1k_indices(sorted(synsets)) == sorted(indices)


def test_unknown_wnid_is_an_error():
    with pytest.raises(ValueError, match="n99999999"):
        imagenet1k_indices(["n01440764", "n99999999"])


def test_restricted_predictions_ignore_logits_outside_the_subset():
    logits = torch.full((3, 1000), -5.0)
    subset = [7, 42, 999]
    logits[:, 500] = 100.0  # the unrestricted argmax, outside the subset
    logits[0, 42] = 1.0
    logits[1, 999] = 1.0
    logits[2, 7] = 1.0
    assert logits.argmax(-1).tolist() == [500, 500, 500]
    assert restricted_predictions(logits, subset).tolist() == [1, 2, 0]
