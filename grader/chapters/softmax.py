"""02_softmax: softmax regression and numerical stability (D2L 4.1-4.5).

Reference implementations first, then one check per exercise. The references compute in
float64 from the (possibly float32) inputs; tolerances allow for the float32 quantisation of
inputs of size M (an error of about eps * M in every exponent).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from grader.cases import DTYPES, gen, randn
from grader.feedback import Mismatch, describe_inputs, expect_close, expect_pair, expect_tensor, fmt_number
from grader.registry import Chapter

CHAPTER = Chapter("02_softmax", "Softmax regression and numerical stability")

# --- references ---------------------------------------------------------------------------


def logsumexp(X):
    m = X.max(dim=1, keepdim=True).values
    return (m + torch.log(torch.exp(X - m).sum(dim=1, keepdim=True))).reshape(-1)


def log_softmax(X):
    return X - logsumexp(X).reshape(-1, 1)


def softmax(X):
    return torch.exp(log_softmax(X))


def cross_entropy(logits, y):
    return logsumexp(logits) - logits[torch.arange(logits.shape[0]), y]


def accuracy(y_hat, y):
    if y_hat.dim() > 1 and y_hat.shape[1] > 1:
        y_hat = y_hat.argmax(dim=1)
    return float((y_hat.to(y.dtype) == y).sum())


def train_epoch(net, train_iter, loss, updater):
    if isinstance(net, nn.Module):
        net.train()
    total_loss, correct, n = 0.0, 0.0, 0
    for X, y in train_iter:
        y_hat = net(X)
        l = loss(y_hat, y)
        if isinstance(updater, torch.optim.Optimizer):
            updater.zero_grad()
            l.mean().backward()
            updater.step()
        else:
            l.sum().backward()
            updater(X.shape[0])
        total_loss += l.sum().item()
        correct += accuracy(y_hat, y)
        n += y.numel()
    return total_loss / n, correct / n


def exp_range(dtype):
    info = torch.finfo(dtype)
    return math.log(info.tiny), math.log(info.max)


# --- shared pieces of the checks ---------------------------------------------------------

_T, _TS = torch.Tensor, torch.special
FROM_SCRATCH = {
    torch.softmax: "torch.softmax", _T.softmax: "Tensor.softmax", F.softmax: "F.softmax",
    torch.log_softmax: "torch.log_softmax", _T.log_softmax: "Tensor.log_softmax",
    F.log_softmax: "F.log_softmax", torch.logsumexp: "torch.logsumexp",
    _T.logsumexp: "Tensor.logsumexp", _TS.softmax: "torch.special.softmax",
    _TS.log_softmax: "torch.special.log_softmax", _TS.logsumexp: "torch.special.logsumexp",
    F.cross_entropy: "F.cross_entropy (or nn.CrossEntropyLoss)", F.nll_loss: "F.nll_loss",
    F.softmin: "F.softmin", F.gumbel_softmax: "F.gumbel_softmax",
}


def _eps(dtype):
    return torch.finfo(dtype).eps


def _mag(X):
    return max(1.0, float(X.detach().abs().max())) if X.numel() else 1.0


def prob_tol(dtype, M):
    """Probabilities exp(x - c): a relative error of about eps * M from rounding x - c."""
    eps = _eps(dtype)
    return {"atol": eps, "rtol": max(1e-4 if dtype != torch.float64 else 1e-10, 16 * eps * M)}


def log_tol(dtype, M):
    """Values of size up to M (log-probabilities, log-sum-exp): an absolute error eps * M."""
    eps = _eps(dtype)
    return {"atol": 16 * eps * M, "rtol": 1e-5 if dtype != torch.float64 else 1e-12}


def _ref(fn, *args):
    """A float64 reference cast back to the input's dtype."""
    X = args[0]
    return fn(X.double(), *args[1:]).to(X.dtype)


def _global_max(X):
    return X - X.max()


def _naive_softmax(X):
    e = torch.exp(X)
    return e / e.sum(dim=1, keepdim=True)


def _softmax_likely():
    return {
        "exp overflows (inf / inf = NaN) or underflows (0 / 0): subtract each row's max "
        "before exp (a naive exp(X) / sum(exp(X)))": _naive_softmax,
        "the max of the whole matrix (global max) is subtracted; rows far below it underflow "
        "to 0 / 0: subtract each row's own max (X.max(dim=1, keepdim=True))":
            lambda X: _naive_softmax(_global_max(X)),
        "normalised over the wrong axis (dim=0, columns sum to 1): sum over dim=1":
            lambda X: torch.exp(X - X.max(0, keepdim=True).values)
            / torch.exp(X - X.max(0, keepdim=True).values).sum(0, keepdim=True),
        "the row max of shape (n,) was broadcast along the wrong axis: keep it as (n, 1) "
        "with keepdim=True": lambda X: _naive_softmax(X - X.max(dim=1).values),
        "the row sums of shape (n,) divide along the wrong axis: keep them as (n, 1) with "
        "keepdim=True": lambda X: torch.exp(X - X.max(1, keepdim=True).values)
            / torch.exp(X - X.max(1, keepdim=True).values).sum(1),
    }


def _extreme_inputs():
    """(label, X) pairs: large magnitudes, rows far below the global max, all entries very
    negative, float64 beyond float64's exp range."""
    rows_below = randn(4, 5, seed=31) + torch.tensor([[0.0], [-1e4], [50.0], [-300.0]],
                                                     dtype=torch.float64)
    spread = torch.tensor([[0.0, 1e4, -1e4], [-1e4, -1e4, -1e4 + 1], [5.0, 5.0, 5.0],
                           [1e4, 1e4 - 0.5, -3.0]], dtype=torch.float64)
    return [
        ("entries of size 1e4 (float32)", randn(6, 4, seed=30, scale=1e4, dtype=torch.float32)),
        ("entries of size 1e4 (float64)", randn(5, 5, seed=33, scale=1e4)),
        ("rows far below the global max (row offsets 0, -1e4, 50, -300), float32",
         rows_below.float()),
        ("rows far below the global max, float64", rows_below),
        ("all entries below -100 (around -1000), float32",
         (randn(3, 6, seed=32) - 1000).float()),
        ("entries near 1000 in float64 (exp(1000) overflows even float64)",
         randn(4, 3, seed=34) + 1000),
        ("hand-picked extremes: +-1e4, ties, a row of equal entries (float32)", spread.float()),
    ]


SHAPES = ((5, 3), (4, 4), (1, 6), (64, 10), (3, 1))


def _random_inputs():
    for i, ((n, q), dtype) in enumerate(itertools.product(SHAPES, DTYPES)):
        yield f"X {(n, q)} {dtype}, entries of size 3", randn(n, q, seed=i, dtype=dtype,
                                                              scale=3.0)


# --- softmax ---------------------------------------------------------------------------------


def _softmax_case(t, softmax_, X):
    t.expect(softmax_, dict(X=X), _ref(softmax, X), likely=_softmax_likely(),
             forbidden=FROM_SCRATCH, **prob_tol(X.dtype, _mag(X)))


@CHAPTER.exercise("softmax", points=2)
def check_softmax(t, softmax_):
    with t.case("worked example: X = [[1, 2, 3], [-1, 0, 1], [0, 0, 0]]"):
        _softmax_case(t, softmax_, torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0],
                                                 [0.0, 0.0, 0.0]]))
    with t.case("large logits: X = [[1000, 1001, 1002], [-1000, -1001, -1002]]"):
        _softmax_case(t, softmax_, torch.tensor([[1000.0, 1001.0, 1002.0],
                                                 [-1000.0, -1001.0, -1002.0]]))
    if not t.hidden:
        return
    for label, X in _random_inputs():
        with t.case(label):
            _softmax_case(t, softmax_, X)
    for label, X in _extreme_inputs():
        with t.case(label, weight=2):
            _softmax_case(t, softmax_, X)


# --- logsumexp -------------------------------------------------------------------------------


def _lse_naive(X):
    return torch.log(torch.exp(X).sum(1))


def _lse_global_max(X):
    m = X.max()
    return m + torch.log(torch.exp(X - m).sum(1))


def _lse_likely():
    def lse_axis0(X):
        m = X.max(0, keepdim=True).values
        return (m + torch.log(torch.exp(X - m).sum(0, keepdim=True))).reshape(-1)

    def forgot_max(X):
        m = X.max(1, keepdim=True).values
        return torch.log(torch.exp(X - m).sum(1))

    def with_mean(X):
        m = X.max(1, keepdim=True).values
        return (m + torch.log(torch.exp(X - m).mean(1, keepdim=True))).reshape(-1)

    return {
        "exp overflows to inf (or underflows to 0, log 0 = -inf): a naive log(sum(exp(X))); "
        "subtract each row's max m, then add it back: m + log(sum(exp(X - m)))": _lse_naive,
        "the max of the whole matrix (global max) is subtracted; rows far below it underflow "
        "to log(0) = -inf: use each row's own max": _lse_global_max,
        "the max is subtracted inside the exp but not added back: m + log(sum(exp(X - m)))":
            forgot_max,
        "reduced over the wrong axis (dim=0): each row's log-sum-exp is over dim=1": lse_axis0,
        "a mean instead of a sum inside the log": with_mean,
        "the max alone (the log-sum-exp is a smooth max, but not the max)":
            lambda X: X.max(1).values,
    }


def _lse_case(t, lse_, X):
    t.expect(lse_, dict(X=X), _ref(logsumexp, X), likely=_lse_likely(), forbidden=FROM_SCRATCH,
             **log_tol(X.dtype, _mag(X)))


@CHAPTER.exercise("logsumexp", points=2)
def check_logsumexp(t, lse_):
    with t.case("worked example: X = [[0, 0], [1, 2], [-1, 3]]"):
        _lse_case(t, lse_, torch.tensor([[0.0, 0.0], [1.0, 2.0], [-1.0, 3.0]]))
    with t.case("large logits: X = [[1000, 1000], [-1000, -1002]] gives [1000.6931, -999.8731]"):
        _lse_case(t, lse_, torch.tensor([[1000.0, 1000.0], [-1000.0, -1002.0]]))
    if not t.hidden:
        return
    for label, X in _random_inputs():
        with t.case(label):
            _lse_case(t, lse_, X)
    for label, X in _extreme_inputs():
        with t.case(label, weight=2):
            _lse_case(t, lse_, X)


# --- log_softmax -----------------------------------------------------------------------------


def _log_softmax_likely():
    def via_softmax(X):
        m = X.max(1, keepdim=True).values
        e = torch.exp(X - m)
        return torch.log(e / e.sum(1, keepdim=True))

    return {
        "log(softmax(X)): a probability that underflows to 0 gives log(0) = -inf; compute "
        "X - logsumexp(X) instead, which needs no exp of the result": via_softmax,
        "exp overflows or underflows: a naive log-sum-exp (subtract each row's max)":
            lambda X: X - _lse_naive(X).reshape(-1, 1),
        "logsumexp(X) of shape (n,) was broadcast along the wrong axis: reshape it to (n, 1)":
            lambda X: X - logsumexp(X),
        "the max of the whole matrix (global max) is subtracted; rows far below it underflow":
            lambda X: X - _lse_global_max(X).reshape(-1, 1),
        "normalised over the wrong axis (dim=0)":
            lambda X: X - logsumexp(X.T).reshape(1, -1),
    }


def _log_softmax_case(t, ls_, X):
    t.expect(ls_, dict(X=X), _ref(log_softmax, X), likely=_log_softmax_likely(),
             forbidden=FROM_SCRATCH, **log_tol(X.dtype, _mag(X)))


@CHAPTER.exercise("log_softmax", points=1)
def check_log_softmax(t, ls_):
    with t.case("worked example: X = [[1, 2, 3], [0, 0, 0]]"):
        _log_softmax_case(t, ls_, torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]))
    with t.case("a probability below float32's range: X = [[0, -200]] gives [[0, -200]]"):
        _log_softmax_case(t, ls_, torch.tensor([[0.0, -200.0]]))
    if not t.hidden:
        return
    for label, X in _random_inputs():
        with t.case(label):
            _log_softmax_case(t, ls_, X)
    for label, X in _extreme_inputs():
        with t.case(label, weight=2):
            _log_softmax_case(t, ls_, X)


# --- cross_entropy ---------------------------------------------------------------------------


def _ce_likely():
    def pick(Z, y):
        return Z[torch.arange(Z.shape[0]), y]

    def via_probs(logits, y):
        m = logits.max(1, keepdim=True).values
        e = torch.exp(logits - m)
        return -torch.log(pick(e / e.sum(1, keepdim=True), y))

    return {
        "the logits are treated as probabilities (-log(y_hat[i, y[i]]), D2L's cross_entropy of "
        "softmax outputs): this function receives raw logits; compute "
        "logsumexp(logits) - logits[i, y[i]]": lambda logits, y: -torch.log(pick(logits, y)),
        "-log(softmax(logits)[i, y[i]]): a probability that underflows to 0 gives an infinite "
        "loss; compute from logits: logsumexp(logits) - logits[i, y[i]]": via_probs,
        "exp overflows or underflows: a naive softmax or log-sum-exp (subtract each row's max)":
            lambda logits, y: -torch.log(pick(_naive_softmax(logits), y)),
        "the sign is flipped: the loss is -log p, not log p": lambda logits, y: -cross_entropy(
            logits, y),
        "the log-sum-exp is missing (only -logits[i, y[i]])": lambda logits, y: -pick(logits, y),
    }


def _ce_case(t, ce_, logits, y):
    what = f"cross_entropy(logits {tuple(logits.shape)}, y {tuple(y.shape)})"
    got = t.call(ce_, logits, y, what=what, forbidden=FROM_SCRATCH)
    n = logits.shape[0]
    if isinstance(got, torch.Tensor) and got.dim() == 2 and tuple(got.shape) == (n, n) and n > 1:
        raise Mismatch(f"{what} returned shape {(n, n)}, expected {(n,)}.{describe_inputs({'y': y})}"
                       "\n  likely cause: logits[:, y] picks the columns y for every row; pick one "
                       "entry per row with logits[torch.arange(n), y] or logits.gather(1, y[:, None])")
    ref = _ref(cross_entropy, logits, y)
    likely = {c: (lambda f=f: f(logits.clone(), y.clone())) for c, f in _ce_likely().items()}
    expect_tensor(got, ref, what=what, inputs={"logits": logits, "y": y}, likely=likely,
                  **log_tol(logits.dtype, _mag(logits)))


@CHAPTER.exercise("cross_entropy", points=2)
def check_cross_entropy(t, ce_):
    logits = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, -1.0]])
    with t.case("worked example: two examples, three classes, y = [0, 2]"):
        _ce_case(t, ce_, logits, torch.tensor([0, 2]))
    with t.case("extreme logits: [[0, 1000], [-1000, 0]] with y = [0, 1] gives [1000, 0]"):
        _ce_case(t, ce_, torch.tensor([[0.0, 1000.0], [-1000.0, 0.0]]), torch.tensor([0, 1]))
    if not t.hidden:
        return
    cases = [(label, X) for label, X in _random_inputs() if X.shape[1] > 1]
    for i, (label, X) in enumerate(cases):
        y = torch.randint(0, X.shape[1], (X.shape[0],), generator=gen(100 + i))
        with t.case(label):
            _ce_case(t, ce_, X, y)
    for i, (label, X) in enumerate(_extreme_inputs()):
        # the labels of the smallest logits: large but finite losses
        y = X.argmin(dim=1) if i % 2 else torch.randint(0, X.shape[1], (X.shape[0],),
                                                         generator=gen(200 + i))
        with t.case(label, weight=2):
            _ce_case(t, ce_, X, y)
    with t.case("one example (n = 1)"):
        _ce_case(t, ce_, torch.tensor([[3.0, -1.0, 0.0, 2.0]]), torch.tensor([3]))


# --- accuracy ---------------------------------------------------------------------------------


def _accuracy_case(t, acc_, y_hat, y, label_hint=""):
    what = f"accuracy(y_hat {tuple(y_hat.shape)}, y {tuple(y.shape)})"
    got = t.call(acc_, y_hat, y, what=what)
    ref = accuracy(y_hat, y)
    inputs = {"y_hat": y_hat, "y": y}
    if isinstance(got, torch.Tensor):
        raise Mismatch(f"{what} returned a tensor ({got.dtype}, shape {tuple(got.shape)}), "
                       "expected a Python float.\n  likely cause: the count is not converted; "
                       "return float(...) of it (a tensor would keep the batch's memory alive "
                       "when added up over an epoch)")
    if isinstance(got, bool) or not isinstance(got, float):
        raise Mismatch(f"{what} returned {type(got).__name__} {got!r}, expected a Python float "
                       f"({fmt_number(ref)}).\n  likely cause: return float(count)")
    n = y.numel()
    causes = {"the fraction correct instead of the number of correct predictions (do not divide "
              "by the number of examples)": ref / n if n else ref}
    if y_hat.dim() == 2:
        causes["argmax over the wrong axis (dim=0): the predicted class of example i is the "
               "argmax of row i (dim=1)"] = float((y_hat.argmax(0) == y).sum()) \
            if y_hat.shape[0] == y_hat.shape[1] else math.nan
    else:
        causes["a 1-D y_hat already holds predicted labels: compare it with y directly"] = \
            float((y_hat.argmax() == y).sum())
    cause = next((c for c, v in causes.items() if abs(got - v) < 1e-6 and abs(v - ref) > 1e-6),
                 None)
    expect_close(got, ref, what=what, atol=1e-6, inputs=inputs, cause=cause)


@CHAPTER.exercise("accuracy", points=1, d2l=("accuracy",))
def check_accuracy(t, acc_):
    y_hat = torch.tensor([[0.1, 0.3, 0.6], [0.3, 0.2, 0.5], [0.8, 0.1, 0.1], [0.2, 0.7, 0.1]])
    with t.case("worked example: 4 examples, 3 classes, y = [2, 0, 0, 2]: 2 correct, 2.0"):
        _accuracy_case(t, acc_, y_hat, torch.tensor([2, 0, 0, 2]))
    if not t.hidden:
        return
    for i, (n, q) in enumerate(((10, 3), (4, 4), (5, 5), (100, 10), (1, 2))):
        y_hat = randn(n, q, seed=300 + i, dtype=DTYPES[i % 2])
        y = torch.randint(0, q, (n,), generator=gen(400 + i))
        y[: n // 2] = y_hat[: n // 2].argmax(1)  # about half correct
        with t.case(f"y_hat ({n}, {q}) of logits"):
            _accuracy_case(t, acc_, y_hat, y)
    with t.case("none correct and all correct"):
        X = randn(6, 4, seed=500)
        _accuracy_case(t, acc_, X, (X.argmax(1) + 1) % 4)
        _accuracy_case(t, acc_, X, X.argmax(1))
    with t.case("1-D y_hat of predicted labels (int64)"):
        _accuracy_case(t, acc_, torch.tensor([0, 2, 1, 1, 3]), torch.tensor([0, 2, 2, 1, 0]))
    with t.case("1-D y_hat of predicted labels stored as floats"):
        _accuracy_case(t, acc_, torch.tensor([1.0, 0.0, 2.0]), torch.tensor([1, 1, 2]))


# --- train_epoch ------------------------------------------------------------------------------


class _ModeProbe(nn.Module):
    """Passes its input through and records whether the net was in training mode."""

    def __init__(self):
        super().__init__()
        self.modes = []

    def forward(self, X):
        self.modes.append(self.training)
        return X


def _data(seed, sizes, d, q, dtype):
    n = sum(sizes)
    X = randn(n, 1, d, seed=seed, dtype=dtype)
    y = torch.randint(0, q, (n,), generator=gen(seed + 1))
    batches, i = [], 0
    for s in sizes:
        batches.append((X[i:i + s], y[i:i + s]))
        i += s
    return batches


def _module_net(seed, d, q, dtype):
    net = nn.Sequential(nn.Flatten(), _ModeProbe(), nn.Linear(d, q)).to(dtype)
    with torch.no_grad():
        net[2].weight.copy_(randn(q, d, seed=seed, dtype=dtype))
        net[2].bias.copy_(randn(q, seed=seed + 1, dtype=dtype))
    net.eval()
    return net


class _ScratchNet:
    """A from-scratch softmax regression: a plain callable, not an nn.Module."""

    def __init__(self, seed, d, q, dtype):
        self.d = d
        self.W = randn(d, q, seed=seed, dtype=dtype).requires_grad_()
        self.b = randn(q, seed=seed + 1, dtype=dtype).requires_grad_()

    def __call__(self, X):
        return X.reshape(-1, self.d) @ self.W + self.b

    def params(self):
        return [self.W, self.b]


class _Updater:
    """A custom updater like d2l's: minibatch SGD on given parameters, records batch sizes."""

    def __init__(self, params, lr):
        self.params, self.lr, self.calls = params, lr, []

    def __call__(self, batch_size):
        self.calls.append(batch_size)
        with torch.no_grad():
            for p in self.params:
                if p.grad is not None:
                    p -= self.lr * p.grad / batch_size
                    p.grad.zero_()


def _ce_loss(y_hat, y):
    return cross_entropy(y_hat, y)


def _simulate(make, batches, mode):
    """Train a fresh copy with reference variants; return (params, mean loss, correct, ...)."""
    net, params, updater = make()
    sums, corrects, means = 0.0, 0.0, []
    for X, y in batches:
        y_hat = net(X)
        l = _ce_loss(y_hat, y)
        opt = isinstance(updater, torch.optim.Optimizer)
        if opt and mode != "no_zero":
            updater.zero_grad()
        if mode == "flip":
            (l.sum() if opt else l.mean()).backward()
        else:
            (l.mean() if opt else l.sum()).backward()
        updater.step() if opt else updater(X.shape[0])
        sums += l.sum().item()
        corrects += accuracy(y_hat, y)
        means.append(l.mean().item())
    return [p.detach().clone() for p in params], sums, corrects, means


def _train_case(t, train_epoch_, kind, seed, sizes, d, q, dtype, lr):
    batches = _data(seed, sizes, d, q, dtype)
    n = sum(sizes)

    def make():
        if kind == "scratch":
            net = _ScratchNet(seed + 10, d, q, dtype)
            return net, net.params(), _Updater(net.params(), lr)
        net = _module_net(seed + 10, d, q, dtype)
        params = list(net.parameters())
        updater = torch.optim.SGD(params, lr=lr) if kind == "optimizer" else _Updater(params, lr)
        return net, params, updater

    net, params, updater = make()
    what = {"optimizer": "train_epoch(net, train_iter, loss, torch.optim.SGD(...))",
            "scratch": "train_epoch(net, train_iter, loss, updater) with a from-scratch net "
                       "(a plain function) and a custom updater",
            "module": "train_epoch(net, train_iter, loss, updater) with an nn.Module and a "
                      "custom updater"}[kind]
    try:
        out = t.call(train_epoch_, net, batches, _ce_loss, updater, what=what, may_modify=True)
    except Mismatch as failure:
        if "has no attribute 'train'" in str(failure):
            raise Mismatch(f"{failure}\n  likely cause: here net is a plain function, not an "
                           "nn.Module; call net.train() only if isinstance(net, "
                           "torch.nn.Module)") from None
        raise
    expect_pair(out, what, "mean loss per example", "fraction correct")
    if kind != "scratch":
        modes = net[1].modes
        if not modes:
            raise Mismatch(f"{what} never called net on a minibatch")
        if not all(modes):
            raise Mismatch(f"{what}: the net was in evaluation mode while training (it was "
                           "handed over in evaluation mode)\n  likely cause: net.train() is not "
                           "called; layers such as dropout behave differently in training mode")
    ref_params, ref_sum, ref_correct, ref_means = _simulate(make, batches, "ok")
    if isinstance(updater, _Updater) and updater.calls != list(sizes):
        raise Mismatch(f"{what}: the updater was called with batch sizes {updater.calls}, "
                       f"expected {list(sizes)} (one call per minibatch)\n  likely cause: call "
                       "updater(X.shape[0]) once after each backward pass")
    opt = kind == "optimizer"
    alternatives = {
        ("with an optimizer, back-propagate l.mean() (not l.sum()), so the step does not grow "
         "with the batch size" if opt else
         "with a custom updater, back-propagate l.sum(): the updater divides by the batch "
         "size itself, so l.mean() divides twice"): "flip",
    }
    if opt:
        alternatives["the gradients are not reset: call updater.zero_grad() before each "
                     "backward pass, or they accumulate over minibatches"] = "no_zero"
    for i, (p, expected) in enumerate(zip(params, ref_params)):
        got = p.detach()
        if _close(got, expected, dtype):
            continue
        cause = None
        for c, mode in alternatives.items():
            alt = _simulate(make, batches, mode)[0][i]
            if _close(got, alt, dtype):
                cause = c
                break
        if cause is None and _close(got, list(make()[1])[i].detach(), dtype):
            cause = "the parameters were not updated (no updater step / updater call)"
        expect_tensor(got, expected, what=f"parameter {i} after {what}",
                      atol=1e-5 if dtype == torch.float32 else 1e-10, rtol=1e-4,
                      likely={cause: (lambda g=got: g)} if cause else None)
    mean_loss, frac = out
    loss_causes = {
        "the summed loss instead of the mean per example (divide by the number of examples)":
            ref_sum,
        "the mean of the batch means: batches of different sizes must be weighted by their "
        "size (sum l.sum() over batches, divide by the number of examples)":
            sum(ref_means) / len(ref_means),
        "the loss of the last minibatch only": ref_means[-1],
    }
    _expect_number(mean_loss, ref_sum / n, f"the mean loss returned by {what}", loss_causes)
    acc_causes = {
        "the number correct instead of the fraction (divide by the number of examples)":
            ref_correct,
        "a percentage instead of a fraction": 100 * ref_correct / n,
    }
    _expect_number(frac, ref_correct / n, f"the fraction correct returned by {what}", acc_causes)


def _close(a, b, dtype):
    return a.shape == b.shape and torch.allclose(
        a.double(), b.double(), atol=1e-5 if dtype == torch.float32 else 1e-10, rtol=1e-4)


def _expect_number(got, expected, what, causes):
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    cause = None
    if isinstance(got, int | float) and not isinstance(got, bool):
        cause = next((c for c, v in causes.items() if abs(got - v) <= 1e-5 * max(1, abs(v))
                      and abs(v - expected) > 1e-5 * max(1, abs(v))), None)
    expect_close(got, expected, what=what, atol=1e-5, rtol=1e-5, cause=cause)


@CHAPTER.exercise("train_epoch", points=2, d2l=("train_epoch_ch3",))
def check_train_epoch(t, train_epoch_):
    with t.case("nn.Module with torch.optim.SGD: 10 examples in batches of 4, 4, 2", weight=2):
        _train_case(t, train_epoch_, "optimizer", 0, (4, 4, 2), 4, 3, torch.float32, 0.5)
    with t.case("a from-scratch net (a function) with a custom updater: batches of 4, 4, 2",
                weight=2):
        _train_case(t, train_epoch_, "scratch", 1, (4, 4, 2), 4, 3, torch.float32, 0.5)
    if not t.hidden:
        return
    for i, (kind, sizes, d, q, dtype, lr) in enumerate((
            ("optimizer", (8, 8, 8, 3), 6, 5, torch.float64, 0.3),
            ("optimizer", (5,), 3, 3, torch.float32, 1.0),
            ("scratch", (16, 16, 1), 5, 4, torch.float64, 0.1),
            ("scratch", (3, 3), 2, 2, torch.float32, 2.0),
            ("module", (6, 6, 4), 4, 4, torch.float32, 0.4),
            ("module", (10, 7), 8, 3, torch.float64, 0.2))):
        with t.case(f"{kind}: batches of {', '.join(map(str, sizes))}, {d} features, {q} "
                    f"classes, {dtype}"):
            _train_case(t, train_epoch_, kind, 20 + 7 * i, sizes, d, q, dtype, lr)


# --- exp_range (D2L 4.5, exercise: the range of exp in each floating-point format) -----------


@CHAPTER.exercise("exp_range", points=1)
def check_exp_range(t, exp_range_):
    def case(dtype):
        what = f"exp_range({dtype})"
        out = t.call(exp_range_, dtype, what=what)
        if not isinstance(out, tuple | list) or len(out) != 2:
            raise Mismatch(f"{what} should return a pair (lo, hi) of floats, but returned "
                           f"{type(out).__name__}")
        lo, hi = exp_range(dtype)
        info = torch.finfo(dtype)
        causes = {
            "log10 instead of the natural log (math.log)": (math.log10(info.tiny),
                                                            math.log10(info.max)),
            "eps (the gap after 1) instead of tiny (the smallest positive normal number)":
                (math.log(info.eps), hi),
            "the range of float32 whatever the dtype: use torch.finfo(dtype)":
                exp_range(torch.float32),
            "lo = -hi: the format's range is not symmetric in the exponent; use finfo.tiny":
                (-hi, hi),
            "the smallest subnormal number (tiny * eps) instead of tiny, the smallest normal "
            "one (below tiny, exp(x) loses precision)": (math.log(info.tiny * info.eps), hi),
        }
        for i, (name, value) in enumerate((("lo", lo), ("hi", hi))):
            got = out[i]
            cause = None
            if isinstance(got, int | float) and not isinstance(got, bool):
                cause = next((c for c, v in causes.items() if abs(got - v[i]) < 1e-4
                              and abs(v[i] - value) > 1e-4), None)
            expect_close(got, value, what=f"{name} of {what}", atol=1e-4, rtol=1e-6, cause=cause)

    with t.case("float32: exp(x) is a finite normal float32 for -87.34 < x < 88.72"):
        case(torch.float32)
    if not t.hidden:
        return
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        with t.case(f"{dtype}"):
            case(dtype)
