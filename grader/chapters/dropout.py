"""05_dropout: dropout (D2L 5.6), the instructor's half.

The references, the values derived from them that the visible checks ask for (`t.ref`), the
likely mistakes (`LIKELY`, for `t.likely`) and the hidden checks. The visible checks and the
judging helpers are public (`grader.checks.dropout`).

`dropout_layer` is random: its checks are statistical (`grader.cases.expect_stat`, Z = 5
standard errors, a correct answer fails one comparison with probability 5.7e-7).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from grader.cases import expect_stat, gen, randn
from grader.checks.dropout import (  # the public half registers the exercises
    CHAPTER,
    _drop,
    _fraction,
    _inputs,
    _pairs_zeroed,
    dropconnect_bias_case,
    dropconnect_case,
    dropconnect_exact_case,
    dropout_case,
    edge_case,
    loss_case,
    mlp_case,
    noise_case,
    noise_eval_case,
)
from grader.feedback import Mismatch
from grader.observe import build_loss, build_sequential

# --- references ---------------------------------------------------------------------------


def dropout_layer(X, dropout, generator=None):
    if not 0 <= dropout <= 1:
        raise ValueError(f"dropout must be in [0, 1], got {dropout}")
    if dropout == 1:
        return torch.zeros_like(X)
    mask = torch.rand(X.shape, generator=generator, device=X.device) > dropout
    return mask.to(X.dtype) * X / (1.0 - dropout)


class DropoutMLP(nn.Module):
    def __init__(self, num_inputs, num_outputs, num_hiddens1, num_hiddens2, dropout1, dropout2):
        super().__init__()
        self.dropout1, self.dropout2 = dropout1, dropout2
        self.lin1 = nn.Linear(num_inputs, num_hiddens1)
        self.lin2 = nn.Linear(num_hiddens1, num_hiddens2)
        self.lin3 = nn.Linear(num_hiddens2, num_outputs)

    def forward(self, X):
        H1 = torch.relu(self.lin1(X.reshape((X.shape[0], -1))))
        if self.training:
            H1 = dropout_layer(H1, self.dropout1)
        H2 = torch.relu(self.lin2(H1))
        if self.training:
            H2 = dropout_layer(H2, self.dropout2)
        return self.lin3(H2)


def evaluate_loss(net, data_iter, loss):
    was_training = net.training
    net.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for X, y in data_iter:
            out = net(X)
            l = loss(out, y.reshape(out.shape) if out.shape[1:] == (1,) else y)
            total += float(l.sum())
            count += len(l)
    net.train(was_training)
    return total / count


def dropconnect_linear(X, W, b, p, generator=None):
    mask = torch.rand(W.shape, generator=generator, device=W.device) > p
    return X @ (mask.to(W.dtype) * W / (1.0 - p)) + b


def gaussian_noise_layer(X, sigma, training=True, generator=None):
    if not training:
        return X.clone()
    eps = torch.randn(X.shape, generator=generator, dtype=X.dtype, device=X.device)
    return X * (1.0 + sigma * eps)


# --- values the visible checks ask for (t.ref) --------------------------------------------------


def _dropout_scale(p):
    """What the survivors of dropout with probability p are multiplied by."""
    return 1.0 / (1.0 - p) if p < 1 else None


def _dropout_zeroed(p):
    """The probability that an element is zeroed."""
    return float(p)


def _dropout_both_zeroed(p):
    """The probability that two elements (independent masks) are both zeroed."""
    return float(p) * float(p)


def _dropout_edge(X, p):
    """dropout_layer(X, p) for p = 0 or 1 (exact, whatever the generator)."""
    return dropout_layer(X, p, torch.Generator().manual_seed(0))


def _linear(state, name, H):
    return F.linear(H, state[f"{name}.weight"], state[f"{name}.bias"])


def _mlp_forward(state, X):
    """DropoutMLP in evaluation mode with the parameters `state` of lin1, lin2, lin3."""
    H1 = torch.relu(_linear(state, "lin1", X.reshape(X.shape[0], -1)))
    return _linear(state, "lin3", torch.relu(_linear(state, "lin2", H1)))


def _loss_net(layers, state, dtype):
    net = build_sequential(layers, None, False).to(dtype)
    net.load_state_dict(state)
    return net


def _batches(X, y, batch_size):
    return [(X[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(X), batch_size)]


def _evaluate_loss_of(layers, state, dtype, X, y, batch_size, loss_name):
    """evaluate_loss of the judge's net (`grader.checks.dropout.loss_net_layers`)."""
    net = _loss_net(layers, state, dtype)
    return evaluate_loss(net, _batches(X, y, batch_size), build_loss(loss_name, reduction="none"))


def _per_batch_means(layers, state, dtype, X, y, batch_size, loss_name):
    net, loss = _loss_net(layers, state, dtype), build_loss(loss_name, reduction="none")
    with torch.no_grad():
        means = [float(loss(net(Xb), yb).mean()) for Xb, yb in _batches(X, y, batch_size)]
    return sum(means) / len(means)


def _full_batches(layers, state, dtype, X, y, batch_size, loss_name):
    n = len(X)
    expected = _evaluate_loss_of(layers, state, dtype, X, y, batch_size, loss_name)
    return expected * n / (math.ceil(n / batch_size) * min(batch_size, n))


def _dropconnect_zero_input(X, W, b, p):
    """dropconnect_linear for X = 0: b in every row, whatever the mask."""
    return dropconnect_linear(X, W, b, p, torch.Generator().manual_seed(0))


def _dropconnect_exact(X, W, b):
    """dropconnect_linear with p = 0: X @ W + b."""
    return dropconnect_linear(X, W, b, 0.0, torch.Generator().manual_seed(0))


def _noise_eval(X, sigma):
    return gaussian_noise_layer(X, sigma, False)


def _noise_ratio_mean(sigma):
    """E[out / X] in training mode."""
    return 1.0


def _noise_ratio_var(sigma, x_abs):
    """Var[out / X] in training mode for an element of size x_abs."""
    return float(sigma) ** 2


def _noise_tail(k):
    """P(|out / X - 1| > k sigma) = P(|N(0, 1)| > k)."""
    return math.erfc(k / math.sqrt(2))


LIKELY = {
    "_dropconnect_scale": {
        "the weights kept are not rescaled: divide them by 1 - p, so that the expected output "
        "is X @ W + b": lambda p: 1.0,
        "the weights kept are multiplied by 1 - p; divide by 1 - p instead": lambda p: 1.0 - p,
        "the weights kept are divided by p; divide by 1 - p instead":
            lambda p: 1.0 / p if p > 0 else None,
    },
    "_dropconnect_zeroed": {
        "a fraction p of the weights is kept instead of dropped: keep a weight where "
        "torch.rand(W.shape) > p": lambda p: 1.0 - p,
    },
    "_dropconnect_zero_input": {
        "b is not added: the output is X @ W_thinned + b":
            lambda X, W, b, p: torch.zeros(X.shape[0], W.shape[1], dtype=X.dtype),
        "the whole output, bias included, is divided by 1 - p: only the weights kept are "
        "rescaled, b is added as it is":
            lambda X, W, b, p: (b / (1 - p)).expand(X.shape[0], -1).clone() if p > 0 else None,
    },
    "_dropconnect_exact": {
        "b is not added: the output is X @ W_thinned + b": lambda X, W, b: X @ W,
        "W is transposed: W has shape (num_inputs, num_outputs), so the output is X @ W":
            lambda X, W, b: X @ W.T.reshape(W.shape) + b,
    },
    "_noise_ratio_mean": {
        "the noise has mean 0 (X * sigma * eps): multiply X by 1 + sigma * eps, whose mean is 1":
            lambda sigma: 0.0,
        "eps is uniform on [0, 1) (torch.rand): use standard normal noise, torch.randn":
            lambda sigma: 1.0 + sigma / 2,
    },
    "_noise_ratio_var": {
        "the noise is added (X + sigma * eps), not multiplied: multiplicative noise X * (1 + "
        "sigma * eps) scales with each activation":
            lambda sigma, x_abs: sigma ** 2 / x_abs ** 2,
        "the standard deviation of the noise is sigma**2 (torch.normal takes a standard "
        "deviation, not a variance): it should be sigma":
            lambda sigma, x_abs: sigma ** 4,
    },
    "_dropout_scale": {
        "the survivors are not rescaled: divide them by 1 - dropout (inverted dropout), so "
        "that the expected output is X": lambda p: 1.0,
        "the survivors are multiplied by 1 - dropout; divide by 1 - dropout instead":
            lambda p: 1.0 - p,
        "the survivors are divided by dropout; divide by 1 - dropout instead":
            lambda p: 1.0 / p if p > 0 else None,
    },
    "_dropout_zeroed": {
        "a fraction `dropout` of the elements is kept instead of dropped: keep an element "
        "where torch.rand(...) > dropout (it then survives with probability 1 - dropout)":
            lambda p: 1.0 - p,
    },
    "_dropout_edge": {
        "everything is dropped at dropout = 0: the mask keeps the elements where "
        "torch.rand(...) < dropout; keep those where it is > dropout":
            lambda X, p: torch.zeros_like(X) if p == 0 else None,
    },
    "_mlp_forward": {
        "ReLU is missing after lin2": lambda s, X: _linear(s, "lin3", _linear(
            s, "lin2", torch.relu(_linear(s, "lin1", X.reshape(len(X), -1))))),
        "ReLU is missing after lin1": lambda s, X: _linear(s, "lin3", torch.relu(_linear(
            s, "lin2", _linear(s, "lin1", X.reshape(len(X), -1))))),
        "a ReLU after lin3: the output layer has no activation (logits)":
            lambda s, X: torch.relu(_mlp_forward(s, X)),
    },
    "_evaluate_loss_of": {
        "the mean of the per-batch means: the last batch is smaller, so its examples weigh "
        "more; add up the per-example losses and divide by the number of examples":
            _per_batch_means,
        "divided by the number of batches times the batch size, but the last batch is "
        "smaller; count the examples (len(y) of each batch)": _full_batches,
    },
}


# --- dropout_layer ----------------------------------------------------------------------------


@CHAPTER.hidden("dropout_layer")
def hidden_dropout_layer(t, fn):
    for i, (shape, p, dtype) in enumerate((
            ((200, 300), 0.2, torch.float64), ((50, 40), 0.8, torch.float32),
            ((10000,), 0.3, torch.float32), ((20, 30, 40), 0.5, torch.float64),
            ((100, 100), 0.95, torch.float32), ((64, 256), 0.1, torch.float32))):
        with t.case(f"X {shape} {dtype}, dropout = {p}: scale, fraction zeroed, independence",
                    weight=2):
            dropout_case(t, fn, shape, p, dtype, 10 + i)
    with t.case("edge cases in float64: dropout = 0 and 1 (also as the ints 0 and 1)"):
        X = _inputs((7, 5), 2, torch.float64)
        for p in (0.0, 1.0, 0, 1):
            edge_case(t, fn, X, p)
    with t.case("dropout outside [0, 1] raises ValueError"):
        X = _inputs((4, 4), 3, torch.float32)
        for p in (-0.1, 1.5, 2):
            what = f"dropout_layer(X, dropout={p})"
            try:
                t.call(fn, X, p, gen(0), what=what)
            except Mismatch as failure:
                if str(failure).startswith(f"{what} raised ValueError"):
                    continue
                raise Mismatch(f"{failure}\n  likely cause: `raise ValueError(...)` for a "
                               "dropout probability outside [0, 1] (not assert, which raises "
                               "AssertionError and disappears with python -O)") from None
            raise Mismatch(f"{what} returned without raising ValueError\n  likely cause: no "
                           "check that 0 <= dropout <= 1")
    with t.case("two calls draw independent masks; the mean is preserved", weight=2):
        p = 0.4
        X = torch.full((300, 200), 2.0)
        # one generator kept in the kernel for both calls (a generator sent is a copy)
        shared = t.build("dropout.with_generator", fn, gen(21))
        first = _drop(t, shared, X, p, "dropout_layer(X, 0.4, g), first call")
        second = _drop(t, shared, X, p, "dropout_layer(X, 0.4, g), second call with the same g")
        _pairs_zeroed(first == 0, second == 0, p * p,
                      "how often an element is zeroed in both of two calls",
                      "the two calls dropped the same elements: the generator is re-seeded, "
                      "or one mask is reused; draw a fresh mask on every call")
        N = X.numel()
        expect_stat(first.double().mean().item(), 2.0, 2.0 * math.sqrt(p / (1 - p) / N),
                    "the mean of dropout_layer(X, 0.4) for X = 2 everywhere",
                    "inverted dropout preserves the expectation: E[output] = X")
        third = _drop(t, fn, X, p, "dropout_layer(X, 0.4) without a generator")
        fourth = _drop(t, fn, X, p, "dropout_layer(X, 0.4), again without a generator")
        _fraction(third == 0, p, {c: f(p) for c, f in LIKELY["_dropout_zeroed"].items()},
                  "dropout_layer(X, 0.4) without a generator")
        if torch.equal(third, fourth):
            raise Mismatch("two calls without a generator gave the same result\n  likely "
                           "cause: a fixed seed inside the function (torch.manual_seed)")
    with t.case("all randomness comes from `generator`"):
        X = _inputs((30, 30), 4, torch.float32)
        t.build("seed_global", 1)
        a = _drop(t, fn, X, 0.5, "dropout_layer(X, 0.5, generator seeded 7)", gen(7))
        t.build("seed_global", 2)
        b = _drop(t, fn, X, 0.5, "dropout_layer(X, 0.5, generator seeded 7)", gen(7))
        c = _drop(t, fn, X, 0.5, "dropout_layer(X, 0.5, generator seeded 8)", gen(8))
        if not torch.equal(a, b):
            raise Mismatch("two calls with generators of the same seed gave different results\n"
                           "  likely cause: torch.rand called without `generator=generator`, so "
                           "it uses the global random state")
        if torch.equal(a, c):
            raise Mismatch("generators of different seeds gave the same result\n  likely "
                           "cause: the generator is not used, or re-seeded inside")


# --- DropoutMLP -----------------------------------------------------------------------------


@CHAPTER.hidden("DropoutMLP")
def hidden_dropout_mlp(t, cls):
    for i, (args, batch, image, dtype) in enumerate((
            ((64, 10, 256, 128, 0.5, 0.2), 256, (1, 8, 8), torch.float32),
            ((12, 2, 100, 100, 0.0, 0.9), 200, (3, 2, 2), torch.float64),
            ((784, 10, 64, 64, 0.3, 0.7), 200, (1, 28, 28), torch.float32),
            ((5, 4, 128, 96, 0.1, 0.1), 300, (5,), torch.float32))):
        with t.case(f"DropoutMLP{args} on X ({batch}, {', '.join(map(str, image))}), {dtype}"):
            mlp_case(t, cls, args, batch, image, 10 + i, dtype)


# --- evaluate_loss --------------------------------------------------------------------------


@CHAPTER.hidden("evaluate_loss")
def hidden_evaluate_loss(t, fn):
    for i, (n, bs, classes, start, dtype, loader) in enumerate((
            (50, 8, True, True, torch.float32, True),
            (50, 8, True, False, torch.float32, True),
            (33, 32, False, True, torch.float64, True),
            (100, 7, True, False, torch.float64, False),
            (64, 16, False, False, torch.float32, False),
            (5, 10, True, True, torch.float32, True))):
        with t.case(f"{n} examples in batches of {bs}, "
                    f"{'cross-entropy' if classes else 'squared'} loss, {dtype}, net in "
                    f"{'training' if start else 'evaluation'} mode"):
            loss_case(t, fn, n, bs, classes, start, 20 + i, dtype, loader)


# --- dropconnect_linear -----------------------------------------------------------------------


@CHAPTER.hidden("dropconnect_linear")
def hidden_dropconnect_linear(t, fn):
    with t.case("X = 0 gives b (p = 0.3 in float64, 0.8 in float32); p = 0 gives X @ W + b"):
        dropconnect_bias_case(t, fn, 7, 4, 0.3, torch.float64, 40)
        dropconnect_bias_case(t, fn, 20, 9, 0.8, torch.float32, 41)
        X, W, b = randn(9, 6, seed=42), randn(6, 4, seed=43), randn(4, seed=44)
        dropconnect_exact_case(t, fn, X, W, b)
    for i, (n_in, n_out, n_dense, p, dtype) in enumerate((
            (60, 50, 16, 0.5, torch.float64), (30, 80, 10, 0.2, torch.float32),
            (100, 20, 12, 0.7, torch.float32), (50, 50, 8, 0.1, torch.float64))):
        with t.case(f"W ({n_in}, {n_out}) {dtype}, p = {p}: the weights dropped, their scale, "
                    "one thinned W for the whole batch", weight=2):
            dropconnect_case(t, fn, n_in, n_out, n_dense, p, dtype, 30 + i)
    with t.case("all randomness comes from `generator`; the mean over many calls is X @ W + b"):
        X, W, b = randn(5, 12, seed=45), randn(12, 6, seed=46), randn(6, seed=47)
        what = "dropconnect_linear(X (5, 12), W (12, 6), b, p=0.5, generator seeded {})"
        t.build("seed_global", 1)
        first = t.call(fn, X, W, b, 0.5, gen(8), what=what.format(8))
        t.build("seed_global", 2)
        again = t.call(fn, X, W, b, 0.5, gen(8), what=what.format(8))
        other = t.call(fn, X, W, b, 0.5, gen(9), what=what.format(9))
        if not all(isinstance(v, torch.Tensor) for v in (first, again, other)):
            raise Mismatch(f"{what.format(8)} should return a torch.Tensor")
        if not torch.equal(first, again):
            raise Mismatch("two calls with generators of the same seed gave different results\n"
                           "  likely cause: torch.rand called without `generator=generator` "
                           "(or torch.nn.functional.dropout, which has no generator), so it "
                           "uses the global random state")
        if torch.equal(first, other):
            raise Mismatch("generators of different seeds gave the same result\n  likely "
                           "cause: the generator is not used, or re-seeded inside")
        shared = t.build("dropout.with_generator", fn, gen(48))
        reps, p = 200, 0.5
        outs = [t.call(shared, X, W, b, p, what="dropconnect_linear(X, W, b, 0.5, g)")
                for _ in range(reps)]
        if not all(isinstance(v, torch.Tensor) and v.shape == (5, 6) for v in outs):
            raise Mismatch("dropconnect_linear(X (5, 12), W (12, 6), b, 0.5, g) should return "
                           "a tensor of shape (5, 6)")
        mean = torch.stack(outs).double().mean(0)
        expected = X @ W + b
        # the variance of one output: p / (1 - p) * sum_i X_i^2 W_ij^2 (independent weights)
        se = torch.sqrt(p / (1 - p) * (X ** 2) @ (W ** 2) / reps)
        k = int(((mean - expected).abs() / se).argmax())
        i, j = divmod(k, expected.shape[1])
        expect_stat(mean[i, j].item(), expected[i, j].item(), se[i, j].item(),
                    f"the mean of output [{i}, {j}] over {reps} calls (the element farthest "
                    "from X @ W + b)",
                    "E[output] should be X @ W + b: drop each weight with probability p and "
                    "divide the weights kept by 1 - p")


# --- gaussian_noise_layer ---------------------------------------------------------------------


@CHAPTER.hidden("gaussian_noise_layer")
def hidden_gaussian_noise_layer(t, fn):
    for i, (shape, sigma, dtype) in enumerate((
            ((300, 100), 0.3, torch.float64), ((40, 50, 10), 1.0, torch.float32),
            ((20000,), 0.5, torch.float32), ((100, 200), 0.1, torch.float64))):
        with t.case(f"X {shape} {dtype}, sigma = {sigma}, training: out / X is N(1, sigma^2), "
                    "independently per element", weight=2):
            noise_case(t, fn, shape, sigma, dtype, 50 + i)
    with t.case("training=False returns X's values (float32 and float64)"):
        for j, dtype in enumerate((torch.float32, torch.float64)):
            noise_eval_case(t, fn, _inputs((6, 5), 60 + j, dtype), 0.7)
    with t.case("all randomness comes from `generator`"):
        X = _inputs((30, 30), 62, torch.float32)
        what = "gaussian_noise_layer(X, 0.5, True, generator seeded {})"
        t.build("seed_global", 1)
        a = t.call(fn, X, 0.5, True, gen(7), what=what.format(7))
        t.build("seed_global", 2)
        b = t.call(fn, X, 0.5, True, gen(7), what=what.format(7))
        c = t.call(fn, X, 0.5, True, gen(8), what=what.format(8))
        if not all(isinstance(v, torch.Tensor) for v in (a, b, c)):
            raise Mismatch(f"{what.format(7)} should return a torch.Tensor")
        if not torch.equal(a, b):
            raise Mismatch("two calls with generators of the same seed gave different results\n"
                           "  likely cause: torch.randn called without `generator=generator`, "
                           "so it uses the global random state")
        if torch.equal(a, c):
            raise Mismatch("generators of different seeds gave the same result\n  likely "
                           "cause: the generator is not used, or re-seeded inside")
