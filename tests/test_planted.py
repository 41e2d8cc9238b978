"""The planted task: worlds whose best merge is known (data/planted.py), and the task that scores
each method's distance to it (tasks/planted.py)."""

from __future__ import annotations

import cmath
import math

import pytest
import torch

from namex_bench.cli import main
from namex_bench.data.planted import STRUCTURES, build_world, nash_direction, planted_cosines
from namex_bench.nash import nash_bargaining

SMALL = {"d_model": 8, "num_experts": 4, "layers": 4}


def flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_every_layer_has_the_planted_cooperating_and_competing_domain_vectors(structure):
    world = build_world(structure, **SMALL)
    for tau in world.domains:
        f = flat(tau)
        norms = f.norm(dim=1)
        torch.testing.assert_close(norms, torch.full_like(norms, 0.3 * math.sqrt(8)))
        torch.testing.assert_close(f @ f.T / torch.outer(norms, norms), planted_cosines(4))


def test_the_nash_weights_solve_the_bargaining_problem_and_are_far_from_uniform():
    world = build_world("nash", **SMALL)
    tau = world.scale * world.domains[0]
    gram = flat(tau) @ flat(tau).T
    alpha, _ = nash_bargaining(gram, max_iter=100)
    torch.testing.assert_close(gram @ alpha, 1 / alpha, rtol=1e-6, atol=1e-8)  # the first-order condition G α = 1/α
    step, weights = nash_direction(tau)
    torch.testing.assert_close(weights, alpha / alpha.sum())
    assert weights[3] > 1.8 * weights[:3].max()  # the competitor gets about twice each cooperating expert's weight
    centroid = tau.mean(0)
    assert (step - centroid).norm() > 0.3 * step.norm()  # so a Nash world and a centroid world differ


def test_the_bases_follow_each_structure():
    gamma = 0.8
    for structure in ("centroid", "nash", "nash_momentum"):
        world = build_world(structure, gamma=gamma, **SMALL)
        steps = [nash_direction(world.scale * tau)[0] for tau in world.domains]
        momentum = None
        for layer in range(3):
            change = world.bases[layer + 1] - world.bases[layer]
            if structure == "centroid":
                expected = gamma * world.scale * world.domains[layer].mean(0)
            elif structure == "nash":
                expected = gamma * steps[layer]
            else:
                beta = cmath.rect(0.7, cmath.pi / 4)
                momentum = steps[layer].to(torch.complex128) if momentum is None else beta * momentum + steps[layer]
                expected = gamma * momentum.real
            torch.testing.assert_close(change, expected)
    convex = build_world("convex", **SMALL)
    assert convex.scale == 1.0  # W = Σ w_i E_i: the base cancels


def test_a_world_is_data_and_its_targets_are_the_teachers_outputs():
    world = build_world("nash", **SMALL, noise=0.0)
    again = build_world("nash", **SMALL, noise=0.0)
    assert all(torch.equal(a, b) for a, b in zip(world.bases + world.domains, again.bases + again.domains))
    h, y = world.sample(5, 3, seed=7)
    h2, y2 = world.sample(5, 3, seed=7)
    assert torch.equal(h, h2) and torch.equal(y, y2) and h.shape == y.shape == (5, 4, 3, 8)
    _, merges = world.forward(h[:, 0].double())
    torch.testing.assert_close(y.double(), h.double() @ merges.transpose(-1, -2), rtol=1e-5, atol=1e-5)
    for layer in range(3):  # each layer's input is the residual stream the teacher computed
        torch.testing.assert_close(h[:, layer + 1].double(), (h[:, layer] + y[:, layer]).double(), rtol=1e-5, atol=1e-5)


def test_the_merge_distance_is_zero_for_a_student_holding_the_worlds_merge():
    """The probe tokens read a layer's merged matrix exactly: a SMEAR student in a convex world
    (``W_g = Σ_i w_gi E_i``) given the world's router is the world, at distance 0."""
    from namex_bench.models.registry import get_builder
    from namex_bench.tasks.planted import evaluate_student

    world = build_world("convex", **SMALL)
    builder = get_builder("planted_moe")
    model = builder.build(builder.validate({}), "smear", {}, world, seed=0)
    with torch.no_grad():
        for block, router in zip(model.backbone.blocks, world.routers):
            block.layer.router.gate.weight.copy_(router.float())
    h, y = world.sample(6, 5, seed=1)
    scores = evaluate_student(model, world, h, y, batch_size=4)
    assert scores["merge_distance"].max() < 1e-5
    assert scores["sq_error"].max() < 1e-3  # the world's noise (0.01²) and float32 rounding


@pytest.mark.slow
def test_a_planted_suite_ranks_methods_by_their_distance_to_the_known_merge(tmp_path):
    suite = tmp_path / "planted.yaml"
    suite.write_text(
        "name: planted\nseeds: [0]\ndevice: cpu\nreference: smear\n"
        "methods: [{name: smoe}, {name: smear}, {name: namex}]\n"
        "models: [{name: student, builder: planted_moe}]\n"
        "tasks:\n  - name: planted\n    type: planted_merge\n    structures: [convex, nash]\n"
        "    world: {d_model: 8, layers: 4}\n    train_sequences: 256\n    test_sequences: 64\n"
        "    train: {epochs: 2, batch_size: 32, lr: 1.0e-2, weight_decay: 0.0}\n"
    )
    assert main(["run", str(suite), "--results", str(tmp_path / "results")]) == 0
    from namex_bench.runner.records import read_records

    done = {r["config"]["method"]["name"]: r for r in read_records(tmp_path / "results", "planted")}
    assert all(r["status"] == "ok" for r in done.values())
    for name in ("smear", "namex"):
        m = done[name]["metrics"]
        assert 0 <= m["merge_distance"] < 1 and math.isclose(m["merge_distance"], (m["convex/merge_distance"] + m["nash/merge_distance"]) / 2)
    assert "merge_distance" not in done["smoe"]["metrics"]  # token routing builds no merged expert
    assert len({r["metrics"]["loss"] for r in done.values()}) == 3  # three methods, three different students
    board = (tmp_path / "results" / "planted" / "leaderboard.md").read_text()
    assert "nash/merge_distance" in board
