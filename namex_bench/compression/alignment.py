"""Aligning the hidden neurons of experts before their parameters are averaged (M-SMoE).

Two GLU experts compute the same function under any permutation ``π`` of their hidden
neurons: row ``h`` of ``W_gate`` and ``W_up`` (and ``b_gate``, ``b_up``) goes with column ``h``
of ``W_down``. Averaging two experts whose neurons are in unrelated orders mixes unrelated
neurons, so M-SMoE first permutes each expert to match the dominant one — weight matching:
``π = argmax_π Σ_h ⟨u_h, v_{π(h)}⟩`` with ``u_h``, ``v_h`` neuron ``h``'s weights (its gate and
up rows, its down column, its biases) in the dominant expert and the other, a linear
assignment problem (SciPy's ``linear_sum_assignment``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..moe.experts import ExpertParams

#: Canonical parameters indexed by the hidden neuron on axis 0 (after the expert axis) or axis 1.
_ROWS = ("w_gate", "w_up", "b_gate", "b_up")


def neuron_features(expert: ExpertParams) -> Tensor:
    """``[I, F]``: each hidden neuron's weights of one expert (no expert axis), concatenated."""
    parts = [expert[name].reshape(expert[name].shape[0], -1) for name in _ROWS if name in expert]
    parts.append(expert["w_down"].T)
    return torch.cat(parts, dim=1)


def permute_neurons(expert: ExpertParams, order: Tensor) -> ExpertParams:
    """The same expert with hidden neuron ``h`` moved to position ``order.index(h)`` (new neuron ``i`` is old ``order[i]``)."""
    out = {name: (value[order] if name in _ROWS else value) for name, value in expert.items()}
    out["w_down"] = expert["w_down"][:, order]
    return out


def align_to(reference: ExpertParams, expert: ExpertParams) -> ExpertParams:
    """``expert`` with its hidden neurons permuted to best match ``reference``'s (weight matching)."""
    from scipy.optimize import linear_sum_assignment

    similarity = neuron_features(reference).double() @ neuron_features(expert).double().T
    rows, cols = linear_sum_assignment(similarity.cpu().numpy(), maximize=True)
    order = torch.as_tensor(cols[rows.argsort()], dtype=torch.long)
    return permute_neurons(expert, order)
