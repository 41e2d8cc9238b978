"""Training options: seeded image augmentation (data/augment.py) and early stopping on validation
perplexity (tasks/training.py's Validator, the language-modelling task's ``early_stopping``)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_language_suites import records, stand_in
from torch import nn

from namex_bench.cli import main
from namex_bench.data.augment import RandomAffine
from namex_bench.data.mnist5k import load_mnist5k
from namex_bench.suite.expand import expand, identity
from namex_bench.suite.loader import load_suite
from namex_bench.tasks.training import Validator


def digits(n: int = 8) -> torch.Tensor:
    data = load_mnist5k("test")
    return torch.stack([data[i][0] for i in range(n)])


def test_an_augmentation_that_moves_nothing_returns_the_images():
    images = digits()
    still = RandomAffine(rotate=0.0, scale=(1.0, 1.0), shift=0.0, seed=0)(images, step=5)
    torch.testing.assert_close(still, images, atol=1e-5, rtol=0)


def test_augmentation_is_keyed_on_seed_and_step_not_on_the_global_generator():
    images = digits()
    augment = RandomAffine(rotate=15.0, scale=(0.9, 1.1), shift=0.1, seed=3)
    torch.manual_seed(0)
    first = augment(images, step=7)
    torch.manual_seed(99)
    torch.rand(1000)
    assert torch.equal(augment(images, step=7), first)  # paired: whatever else drew from the global stream
    assert not torch.equal(augment(images, step=8), first)
    assert not torch.equal(RandomAffine(15.0, (0.9, 1.1), 0.1, seed=4)(images, step=7), first)


def test_augmentation_draws_stay_within_their_ranges():
    theta = RandomAffine(rotate=30.0, scale=(0.8, 1.2), shift=0.1, seed=0).matrices(4096, step=0)
    linear = theta[:, :, :2]
    scale = 1 / torch.linalg.det(linear).sqrt()  # the content's scale s: the sampling matrix is R(−θ)/s
    angle = torch.rad2deg(torch.atan2(linear[:, 0, 1], linear[:, 0, 0]))
    assert 0.8 - 1e-9 <= scale.min() and scale.max() <= 1.2 + 1e-9 and scale.max() - scale.min() > 0.35
    assert angle.abs().max() <= 30 + 1e-9 and angle.abs().max() > 29
    assert theta[:, :, 2].abs().max() <= 0.2 + 1e-12 and theta[:, :, 2].abs().max() > 0.19  # 10% of the image = 0.2 grid units


def test_a_pure_shift_moves_the_digit_by_whole_pixels():
    images = digits(1)
    augment = RandomAffine(rotate=0.0, scale=(1.0, 1.0), shift=0.1, seed=0)
    augment.matrices = lambda count, step: torch.tensor([[[1.0, 0.0, -4 / 28 * 2], [0.0, 1.0, 0.0]]]).double()  # 4 pixels right
    moved = augment(images, step=0)
    torch.testing.assert_close(moved[..., 4:], images[..., :-4], atol=1e-5, rtol=0)


def test_the_validator_stops_after_patience_checks_without_improvement_and_keeps_the_best_weights():
    model = nn.Linear(2, 1)
    losses = iter([5.0, 4.0, 3.0, 2.995, 3.5, 2.99, 2.0])
    validator = Validator(lambda: next(losses), every=10, patience=3, min_improvement=0.01)
    stops = []
    for step in (10, 20, 30, 40, 50, 60):
        with torch.no_grad():
            model.weight.fill_(step)
        stops.append(validator.should_stop(model, step))
    # 2.995 and 2.99 are within 1% of 3.0: not improvements; the third such check stops
    assert stops == [False, False, False, False, False, True]
    assert validator.best_step == 30 and validator.best == 3.0 and model.training
    validator.restore(model)
    assert torch.all(model.weight == 30)


def early_stopping_lm(every: int, patience: int):
    def edit(suite):
        suite["seeds"] = [0]
        suite["methods"] = [{"name": "namex"}]
        suite["reference"] = "namex"
        suite["models"] = [m for m in suite["models"] if m["name"] == "gpt_moe_tiny"]
        suite["tasks"] = [t for t in suite["tasks"] if t["name"] == "shakespeare"]
        task = suite["tasks"][0]
        task["train"]["epochs"] = 0.003  # 26 steps
        task["early_stopping"] = {"every": every, "tokens": 1024, "patience": patience, "min_improvement": 0.5}
        task["eval"] = {"tokens_per_text": 128}
    return edit


@pytest.mark.slow
def test_early_stopping_checks_validation_stops_and_records_the_curve(tmp_path):
    path = stand_in("quickstart", tmp_path, early_stopping_lm(every=4, patience=2))
    assert main(["run", str(path), "--results", str(tmp_path / "r"), "--no-report"]) == 0
    (record,) = records(tmp_path / "r")
    assert record["status"] == "ok"
    curve = record["cells"]["validation"]
    steps = [c["step"] for c in curve]
    # no check lowers the perplexity by half: the first is the best, the run stops two checks later
    assert steps == [4, 8, 12] and record["timings"]["train_steps"] == 12 and record["timings"]["best_step"] == 4
    assert all(math.isclose(c["ppl"], math.exp(c["nll"])) for c in curve)


def test_the_new_options_unset_leave_run_keys_as_they_were_and_set_change_them(tmp_path):
    suite, _ = load_suite("quickstart")
    keys = {run.key for run in expand(suite)}
    for run in expand(suite):  # at any depth: a compression task's pretrain is an LM training too
        assert '"augment"' not in json.dumps(identity(run.config)) and '"early_stopping"' not in json.dumps(identity(run.config))
    path = stand_in("quickstart", tmp_path, early_stopping_lm(every=4, patience=2))
    changed = [run for run in expand(load_suite(path)[0]) if run.task.name == "shakespeare"]
    assert changed and not {run.key for run in changed} & keys
