"""Sliding-window perplexity: coverage of the windows, exact values for toy models, causality."""

from __future__ import annotations

import math

import pytest
import torch

from namex_bench.metrics.perplexity import (
    perplexity_from_nll,
    sliding_window_nll,
    sliding_window_perplexity,
    sliding_windows,
    window_nlls,
)

# (N, context, stride): stride < context, stride == context, stride 1, a last partial window,
# a sequence shorter than one window, N − 1 an exact multiple of the context
CASES = [(50, 8, 4), (50, 8, 8), (50, 8, 1), (23, 7, 3), (23, 7, 7), (5, 16, 4), (2, 1, 1), (33, 8, 8), (40, 10, 9)]
V = 11


def _tokens(n: int, vocab: int = V, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))


class Recorder:
    """A causal toy model that records what it is fed; ``predict(ctx)`` gives the logits [V]
    from the tokens up to and including a position (so it can only use the past)."""

    def __init__(self, predict):
        self.predict, self.inputs = predict, []

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        assert input_ids.ndim == 2 and input_ids.shape[0] == 1
        self.inputs.append(input_ids.clone())
        seq = input_ids[0]
        return torch.stack([self.predict(seq[: j + 1]) for j in range(seq.numel())]).unsqueeze(0)


@pytest.mark.parametrize(("n", "context", "stride"), CASES)
def test_every_token_but_the_first_is_scored_exactly_once(n, context, stride):
    windows = sliding_windows(n, context, stride)
    scored = [t for _, end, first in windows for t in range(first, end + 1)]
    assert sorted(scored) == scored == list(range(1, n))  # once each, x_0 never
    for k, (begin, end, first) in enumerate(windows):
        assert begin == k * stride and 0 < end - begin <= context
        assert begin < first <= end + 1 <= n  # every target has ≥ 1 context token in the window
        assert end <= n - 1  # the input never includes the last token (nothing follows it)
        if k > 0 and end < n - 1:  # full windows score exactly `stride` new tokens …
            assert end - first + 1 == stride
        if k > 0:  # … each with at least context − stride tokens before it in the window
            assert first - begin >= context - stride
    assert windows[-1][1] == n - 1
    assert sliding_window_nll(Recorder(lambda ctx: torch.zeros(V)), _tokens(n), context, stride)[1] == n - 1


@pytest.mark.parametrize(("n", "context", "stride"), CASES)
def test_uniform_model_has_perplexity_vocab_size(n, context, stride):
    total, count = sliding_window_nll(Recorder(lambda ctx: torch.full((V,), 3.7)), _tokens(n), context, stride)
    assert count == n - 1
    assert total == pytest.approx((n - 1) * math.log(V), rel=1e-12)
    assert abs(perplexity_from_nll(total, count) - V) < 1e-9


def test_uniform_model_exact_with_float32_logits_and_large_vocab():
    vocab = 50_257
    ids = _tokens(120, vocab)
    fn = lambda x: torch.zeros(1, x.shape[1], vocab)  # noqa: E731
    assert abs(sliding_window_perplexity(fn, ids, 64, 32) - vocab) < 1e-9 * vocab


@pytest.mark.parametrize(("n", "context", "stride"), CASES)
def test_oracle_model_has_perplexity_one(n, context, stride):
    ids = _tokens(n, seed=1)
    # the model knows the sequence and where the window starts (via the recorded call), and puts a
    # huge margin on the true next token: correct target alignment gives NLL ≈ 0
    calls = []

    def model_fn(x):
        begin = sliding_windows(n, context, stride)[len(calls)][0]
        calls.append(x)
        logits = torch.zeros(1, x.shape[1], V)
        for j in range(x.shape[1]):
            if begin + j + 1 < n:
                logits[0, j, ids[begin + j + 1]] = 100.0
        return logits

    ppl = sliding_window_perplexity(model_fn, ids, context, stride)
    assert ppl == pytest.approx(1.0, abs=1e-12)


def test_stride_equal_to_context_is_non_overlapping_chunks_by_hand():
    # a "bigram" model: p(next | ctx) = softmax(W[ctx[-1]]); with stride == context = 4 and N = 11 the
    # chunks read x[0:4], x[4:8], x[8:10] and score x[1:5], x[5:9], x[9:11]
    torch.manual_seed(0)
    w = torch.randn(V, V, dtype=torch.float64)
    ids = _tokens(11, seed=2)
    model = Recorder(lambda ctx: w[ctx[-1]])
    total, count = sliding_window_nll(model, ids, 4, 4)
    by_hand = 0.0
    for start, stop in ((0, 4), (4, 8), (8, 10)):
        for t in range(start, stop):  # input position t predicts x_{t+1}
            by_hand -= torch.log_softmax(w[ids[t]], dim=0)[ids[t + 1]].item()
    assert [tuple(x[0].tolist()) for x in model.inputs] == [tuple(ids[a:b].tolist()) for a, b in ((0, 4), (4, 8), (8, 10))]
    assert count == 10
    assert total == pytest.approx(by_hand, rel=1e-12)
    # a bigram model needs one token of context: any stride gives the same result
    assert sliding_window_nll(model, ids, 4, 1)[0] == pytest.approx(by_hand, rel=1e-12)


def test_smaller_stride_gives_more_context_and_lower_nll():
    # ids = 0 1 2 … so the next token is ctx[-1] + 1; the model's margin on it grows with the number
    # of tokens it has seen in the window, so overlapping windows (more context) score better
    n, context = 40, 8
    ids = torch.arange(n)

    def predict(ctx):
        logits = torch.zeros(n + 1, dtype=torch.float64)
        logits[ctx[-1] + 1] = float(ctx.numel())
        return logits

    nll = {s: sliding_window_nll(Recorder(predict), ids, context, s)[0] for s in (1, 4, 8)}
    assert nll[1] < nll[4] < nll[8]
    # stride 1: after the first window every target has exactly context tokens before it in the window
    first_window = sum(-math.log(math.exp(j) / (math.exp(j) + n)) for j in range(1, context + 1))
    rest = (n - 1 - context) * -math.log(math.exp(context) / (math.exp(context) + n))
    assert nll[1] == pytest.approx(first_window + rest, rel=1e-12)


@pytest.mark.parametrize(("n", "context", "stride"), CASES)
def test_model_is_fed_contiguous_causal_windows_only(n, context, stride):
    ids = torch.arange(n)  # each id is its own position, so the recorded inputs show what was read
    model = Recorder(lambda ctx: torch.zeros(n))
    sliding_window_nll(model, ids, context, stride)
    for k, x in enumerate(model.inputs):
        positions = x[0].tolist()
        assert 0 < len(positions) <= context
        assert positions == list(range(positions[0], positions[0] + len(positions)))  # contiguous
        assert positions[0] == k * stride
        assert positions[-1] <= n - 2  # the last token is only ever a target
    assert model.inputs[-1][0, -1] == n - 2
    # alignment: a model that predicts "the token after the last one I have seen" (causal) is perfect …
    def causal(ctx):
        logits = torch.zeros(n + 1)
        logits[ctx[-1] + 1] = 100.0
        return logits

    assert sliding_window_perplexity(Recorder(causal), ids, context, stride) == pytest.approx(1.0, abs=1e-12)

    # … while one that puts its mass on the token at its own position (what an off-by-one scorer would
    # reward) is as bad as it gets
    def same(ctx):
        logits = torch.zeros(n + 1)
        logits[ctx[-1]] = 100.0
        return logits

    assert sliding_window_nll(Recorder(same), ids, context, stride)[0] > 90.0 * (n - 1)


def test_perplexity_value_by_hand():
    # two targets with p = 1/2 and 1/8: NLL = ln 2 + ln 8 = ln 16, PPL = 16^(1/2) = 4
    ids = torch.tensor([0, 0, 1])
    logits = torch.log(torch.tensor([[0.5, 0.5], [0.875, 0.125]], dtype=torch.float64))
    total, count = sliding_window_nll(lambda x: logits[: x.shape[1]].unsqueeze(0), ids, 2, 2)
    assert count == 2 and total == pytest.approx(math.log(16), rel=1e-12)
    assert perplexity_from_nll(total, count) == pytest.approx(4.0, rel=1e-12)


@pytest.mark.parametrize(
    ("ids", "context", "stride", "message"),
    [
        (torch.tensor([1]), 4, 2, "at least two tokens"),
        (torch.tensor([1, 2, 3]), 4, 5, "stride must be in"),
        (torch.tensor([1, 2, 3]), 4, 0, "stride must be in"),
        (torch.tensor([1, 2, 3]), 0, 1, "context must be at least 1"),
        (torch.tensor([[1, 2, 3]]), 4, 2, "one-dimensional"),
        (torch.tensor([1.0, 2.0]), 4, 2, "LongTensor"),
    ],
)
def test_errors(ids, context, stride, message):
    with pytest.raises(ValueError, match=message):
        sliding_window_nll(lambda x: torch.zeros(1, x.shape[1], V), ids, context, stride)


def test_wrong_logit_shape_is_rejected():
    with pytest.raises(ValueError, match="logits"):
        sliding_window_nll(lambda x: torch.zeros(x.shape[1], V), torch.arange(5), 4, 2)


@pytest.mark.parametrize(("n", "context", "stride"), CASES)
@pytest.mark.parametrize("batch_size", [2, 3, 64])
def test_batched_windows_give_the_one_at_a_time_nlls(n, context, stride, batch_size):
    # a causal model over [B, L] (position j sees tokens ≤ j of its own row only): a running mean of
    # embeddings; batching windows must change nothing but the number of calls
    torch.manual_seed(0)
    emb, out = torch.randn(V, 5, dtype=torch.float64), torch.randn(5, V, dtype=torch.float64)
    calls = []

    def model(ids: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(ids.shape))
        h = emb[ids].cumsum(1) / torch.arange(1, ids.shape[1] + 1, dtype=torch.float64)[:, None]
        return h @ out

    ids = _tokens(n, seed=3)
    one = window_nlls(model, ids, context, stride)
    singles = len(calls)
    batched = window_nlls(model, ids, context, stride, batch_size)
    assert batched[0] == one[0] and batched[2] == one[2]
    assert batched[1] == pytest.approx(one[1], rel=1e-12, abs=1e-12)
    windows = sliding_windows(n, context, stride)
    assert singles == len(windows) and all(b <= batch_size for b, _ in calls[singles:])
    assert sum(b for b, _ in calls[singles:]) == len(windows)
    assert len(calls) - singles < len(windows) or len(windows) == 1 or batch_size == 1


def test_batch_size_below_one_is_an_error():
    with pytest.raises(ValueError, match="batch_size"):
        window_nlls(lambda ids: torch.zeros(*ids.shape, V), _tokens(10), 4, 4, 0)
