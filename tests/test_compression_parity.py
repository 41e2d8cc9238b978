"""The compression methods against hand-computed cases of their papers' definitions (REAP's
saliency, HC-SMoE's clustering and frequency-weighted merge, M-SMoE's grouping and alignment,
Nash merging), and the calibration statistics against brute force on a real tiny model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_moe_llms import build

from namex_bench.compression import LayerInputs, calibrate, find_sparse_blocks
from namex_bench.compression.alignment import permute_neurons
from namex_bench.compression.blocks import Routing
from namex_bench.compression.calibration import CalibrationSettings, LayerCalibration
from namex_bench.compression.clustering import agglomerative_clusters
from namex_bench.compression.registry import make_compressor


class HandBlock:
    """A block whose routing and expert outputs are given by hand: 3 tokens, 3 experts, top-2.
    Token ``t`` is the input row ``[t, 0]``."""

    top_k = 2
    indices = torch.tensor([[0, 1], [0, 2], [1, 2]])
    weights = torch.tensor([[0.75, 0.25], [0.5, 0.5], [0.6, 0.4]])
    logits = torch.tensor([[2.0, 1.0, 0.0], [1.0, -1.0, 1.0], [0.0, 1.0, 0.5]])
    outputs = {  # (token, expert) → f_j(x_t)
        (0, 0): (3.0, 4.0), (0, 1): (0.0, 2.0), (0, 2): (1.0, 1.0),
        (1, 0): (1.0, 0.0), (1, 1): (2.0, 2.0), (1, 2): (0.0, 6.0),
        (2, 0): (5.0, 5.0), (2, 1): (0.0, 10.0), (2, 2): (8.0, 6.0),
    }

    def route(self, x):
        return Routing(self.logits, self.weights, self.indices)

    def expert_outputs(self, x, experts):
        return torch.tensor([self.outputs[(int(row[0]), int(e))] for row, e in zip(x, experts)])


def hand_calibration() -> LayerCalibration:
    stats = LayerCalibration("hand", 3, 2)
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    stats.update(HandBlock(), x, None, torch.Generator().manual_seed(0), chunk_rows=4)
    return stats


def test_reap_saliency_is_the_papers_definition_on_a_hand_computed_case():
    """S_j = (1/|X_j|) Σ_{x∈X_j} g_j(x) ‖f_j(x)‖ over the tokens routed to j:
    S_0 = (0.75·5 + 0.5·1)/2, S_1 = (0.25·2 + 0.6·10)/2, S_2 = (0.5·6 + 0.4·10)/2."""
    stats = hand_calibration()
    torch.testing.assert_close(stats.reap_saliency, torch.tensor([2.125, 3.25, 3.5], dtype=torch.float64))
    assert stats.frequency.tolist() == [2, 2, 2] and stats.tokens == 3
    torch.testing.assert_close(stats.gate_sum, torch.tensor([1.25, 0.85, 0.9], dtype=torch.float64))
    # HC-SMoE's feature: every expert on every token, averaged (not only the routed tokens)
    torch.testing.assert_close(stats.output_mean, torch.tensor([[3.0, 3.0], [2 / 3, 14 / 3], [3.0, 13 / 3]], dtype=torch.float64))
    logits = HandBlock.logits.double()
    cos = F.cosine_similarity(logits.T[:, None, :], logits.T[None, :, :], dim=-1)
    torch.testing.assert_close(stats.logit_cosine, cos)

    inputs = LayerInputs(stats, experts(3), {"weight": torch.arange(3.0)[:, None].repeat(1, 2)}, top_k=2)
    assert make_compressor("reap_prune").compress(inputs, 2).groups == [[1], [2]]  # the two highest S_j
    assert make_compressor("frequency_prune").compress(inputs, 2).groups == [[0], [1]]  # equal frequencies: lower index


def experts(n: int, hidden: int = 3, d: int = 2) -> dict[str, torch.Tensor]:
    """Expert j's every parameter is filled with the number j."""
    fill = torch.arange(float(n))
    return {"w_gate": fill[:, None, None].expand(n, hidden, d).clone(), "w_up": fill[:, None, None].expand(n, hidden, d).clone(),
            "w_down": fill[:, None, None].expand(n, d, hidden).clone()}


def test_average_linkage_clusters_differ_from_single_linkage_by_hand():
    """1-D points 0, 1.8, 4.1, 7 into two clusters. Both first join {0, 1.8} (distance 1.8). Then
    single linkage joins 4.1 to it (2.3 < 2.9) while average linkage, whose distance to {0, 1.8}
    is (4.1 + 2.3)/2 = 3.2 > 2.9, joins 4.1 and 7."""
    points = torch.tensor([[0.0], [1.8], [4.1], [7.0]])
    assert agglomerative_clusters(points, 2, "average") == [[0, 1], [2, 3]]
    assert agglomerative_clusters(points, 2, "single") == [[0, 1, 2], [3]]
    assert agglomerative_clusters(points, 4) == [[0], [1], [2], [3]] and agglomerative_clusters(points, 1) == [[0, 1, 2, 3]]


def test_hcsmoe_merges_each_cluster_by_routing_frequency():
    stats = LayerCalibration("hand", 4, 1, tokens=4, output_tokens=1, frequency=torch.tensor([1.0, 3.0, 2.0, 2.0], dtype=torch.float64),
                             output_sum=torch.tensor([[0.0], [1.8], [4.1], [7.0]], dtype=torch.float64))
    router = {"weight": torch.arange(4.0)[:, None].repeat(1, 2)}
    plan = make_compressor("hcsmoe_merge").compress(LayerInputs(stats, experts(4), router, top_k=1), 2)
    assert plan.groups == [[0, 1], [2, 3]]
    assert plan.experts["w_gate"][0].unique().tolist() == [(1 * 0 + 3 * 1) / 4]  # Σ f_j θ_j / Σ f_j
    assert plan.experts["w_down"][1].unique().tolist() == [(2 * 2 + 2 * 3) / 4]
    assert plan.router["weight"][:, 0].tolist() == [0.0, 2.0]  # the member nearest the cluster's mean output (ties: the first)
    single = make_compressor("hcsmoe_merge", {"linkage": "single"}).compress(LayerInputs(stats, experts(4), router, top_k=1), 2)
    assert single.groups == [[0, 1, 2], [3]]


def test_msmoe_groups_by_router_logits_around_the_most_used_experts_and_aligns_neurons():
    """Dominant: the 2 most used experts (0 and 2). Expert 1's logits follow expert 2's, expert 3's
    expert 0's, so the groups are {0, 3} and {2, 1}, merged by frequency."""
    t = torch.linspace(-1, 1, 50, dtype=torch.float64)
    logits = torch.stack([t, -t + 0.1 * t**2, -t, t + 0.05], dim=1)
    stats = LayerCalibration("hand", 4, 1, tokens=50, frequency=torch.tensor([5.0, 1.0, 4.0, 2.0], dtype=torch.float64), logit_gram=logits.T @ logits)
    router = {"weight": torch.arange(4.0)[:, None].repeat(1, 2)}
    plan = make_compressor("msmoe_merge", {"align": False}).compress(LayerInputs(stats, experts(4), router, top_k=1), 2)
    assert plan.groups == [[0, 3], [1, 2]] and plan.router["weight"][:, 0].tolist() == [0.0, 2.0]
    assert plan.experts["w_up"][0].unique().tolist() == pytest.approx([(5 * 0 + 2 * 3) / 7])
    assert plan.experts["w_up"][1].unique().tolist() == pytest.approx([(4 * 2 + 1 * 1) / 5])

    # with alignment, an expert that is a neuron permutation of its dominant merges back into it exactly
    torch.manual_seed(0)
    params = {k: torch.randn(4, *v.shape[1:]) for k, v in experts(4, hidden=6).items()}
    shuffled = permute_neurons({k: v[2] for k, v in params.items()}, torch.randperm(6))
    for k in params:
        params[k][1] = shuffled[k]
    aligned = make_compressor("msmoe_merge").compress(LayerInputs(stats, params, router, top_k=1), 2)
    for k in params:
        torch.testing.assert_close(aligned.experts[k][1], params[k][2])
    plain = make_compressor("msmoe_merge", {"align": False}).compress(LayerInputs(stats, params, router, top_k=1), 2)
    assert not torch.allclose(plain.experts["w_gate"][1], params["w_gate"][2])


def test_nash_merge_weights_solve_the_bargaining_problem_around_the_layer_mean():
    """Cluster {0, 1, 2} of 4 experts: 0 and 1 agree, 2 stands apart; expert 3 is far away."""
    from namex_bench.moe.experts import gram

    base = {"w_gate": torch.zeros(4, 1, 3), "w_up": torch.zeros(4, 1, 3), "w_down": torch.zeros(4, 3, 1)}
    base["w_gate"][:, 0] = torch.tensor([[1.0, 0.1, 0.0], [1.0, -0.1, 0.0], [0.3, 0.0, 1.0], [-4.0, 0.0, -3.0]])
    features = torch.tensor([[0.0], [0.1], [0.5], [9.0]], dtype=torch.float64)
    stats = LayerCalibration("hand", 4, 1, tokens=4, output_tokens=1, frequency=torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64), output_sum=features)
    inputs = LayerInputs(stats, base, {"weight": torch.eye(4)}, top_k=1)
    plan = make_compressor("nash_merge").compress(inputs, 2)
    assert plan.groups == [[0, 1, 2], [3]]
    mean = {k: v.mean(0) for k, v in base.items()}
    tau = {k: v[:3].double() - mean[k].double() for k, v in base.items()}
    G = gram(tau)
    # recover α̂ from the merged expert: merged = Σ α̂_j θ_j on the first matrix's three numbers
    A = base["w_gate"][:3, 0].double().T  # columns: members
    alpha_hat = torch.linalg.lstsq(A, plan.experts["w_gate"][0, 0].double()).solution
    assert alpha_hat.sum().item() == pytest.approx(1.0, abs=1e-5)
    alpha = alpha_hat / (alpha_hat @ G @ alpha_hat).sqrt() * 3**0.5  # scale so that αᵀGα = N
    torch.testing.assert_close(alpha * (G @ alpha), torch.ones(3, dtype=torch.float64), atol=1e-4, rtol=1e-4)  # α_i (Gα)_i = 1
    assert alpha_hat[2] > alpha_hat[0] and alpha_hat[0] == pytest.approx(alpha_hat[1].item(), abs=1e-6)  # the one apart weighs more
    hc = make_compressor("hcsmoe_merge").compress(inputs, 2)  # same clusters, frequency weights: a plain average here
    assert hc.groups == plan.groups and not torch.allclose(hc.experts["w_gate"][0], plan.experts["w_gate"][0])


def test_calibration_matches_brute_force_on_a_tiny_model():
    """REAP saliency, frequencies and mean outputs of a real block, recomputed token by token from
    its router and expert weights (softmax, top-k, renormalised; SwiGLU experts)."""
    model = build("qwen3_moe")
    block = find_sparse_blocks(model)[0]
    captured = []
    handle = block.block.register_forward_pre_hook(lambda m, args: captured.append(args[0].reshape(-1, args[0].shape[-1]).detach()))
    windows = torch.randint(3, 64, (2, 9), generator=torch.Generator().manual_seed(5))
    stats = calibrate(model, windows, CalibrationSettings(batch_size=2, output_tokens=None), progress=False)[0]
    handle.remove()
    x = captured[0]
    p = block.experts_params()
    router = block.router.weight.detach()
    reap, freq, outputs = torch.zeros(8, dtype=torch.float64), torch.zeros(8), torch.zeros(8, x.shape[1], dtype=torch.float64)
    for token in x:
        probs = torch.softmax(router @ token, dim=0)
        top = probs.topk(2)
        gates = top.values / top.values.sum()
        f = [p["w_down"][j] @ (F.silu(p["w_gate"][j] @ token) * (p["w_up"][j] @ token)) for j in range(8)]
        for g, j in zip(gates.tolist(), top.indices.tolist()):
            reap[j] += g * f[j].norm().item()
            freq[j] += 1
        outputs += torch.stack(f).double()
    torch.testing.assert_close(stats.frequency.float(), freq)
    torch.testing.assert_close(stats.reap_saliency, torch.where(freq > 0, reap / freq.clamp_min(1), reap), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats.output_mean, outputs / len(x), atol=1e-5, rtol=1e-5)
