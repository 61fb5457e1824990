"""02_softmax: softmax regression and numerical stability (D2L 4.1-4.5).

Instructor only: the references, the likely mistakes (`LIKELY`) and the hidden check of each
exercise; the visible checks are public (`grader.checks.softmax`). The references compute in
float64 from the (possibly float32) inputs; tolerances allow for the float32 quantisation of
inputs of size M (an error of about eps * M in every exponent).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from grader.cases import DTYPES, gen, randn
from grader.checks.softmax import (
    CHAPTER,
    accuracy_case,
    bt_case,
    ce_case,
    exp_range_case,
    hessian_case,
    log_case,
    softmax_case,
    train_case,
    train_inputs,
)
from grader.probes.softmax import build_module_net, build_scratch_net, build_updater

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


def softmax_ce_hessian(o):
    p = torch.exp(o - logsumexp(o.reshape(1, -1)))
    return torch.diag(p) - torch.outer(p, p)


def bradley_terry(o_a, o_b):
    return 1 / (1 + torch.exp(o_b - o_a))


def _p1(o):
    """The softmax of a 1-D o, computed stably."""
    return softmax(o.reshape(1, -1)).reshape(-1)


def _naive_p1(o):
    return torch.exp(o) / torch.exp(o).sum()


def _ref(fn, *args):
    """A float64 reference cast back to the input's dtype."""
    X = args[0]
    return fn(X.double(), *args[1:]).to(X.dtype)


# --- the likely mistakes ---------------------------------------------------------------------


def _global_max(X):
    return X - X.max()


def _naive_softmax(X):
    e = torch.exp(X)
    return e / e.sum(dim=1, keepdim=True)


def _lse_naive(X):
    return torch.log(torch.exp(X).sum(1))


def _lse_global_max(X):
    m = X.max()
    return m + torch.log(torch.exp(X - m).sum(1))


def _lse_axis0(X):
    m = X.max(0, keepdim=True).values
    return (m + torch.log(torch.exp(X - m).sum(0, keepdim=True))).reshape(-1)


def _lse_forgot_max(X):
    m = X.max(1, keepdim=True).values
    return torch.log(torch.exp(X - m).sum(1))


def _lse_with_mean(X):
    m = X.max(1, keepdim=True).values
    return (m + torch.log(torch.exp(X - m).mean(1, keepdim=True))).reshape(-1)


def _ls_via_softmax(X):
    m = X.max(1, keepdim=True).values
    e = torch.exp(X - m)
    return torch.log(e / e.sum(1, keepdim=True))


def _pick(Z, y):
    return Z[torch.arange(Z.shape[0]), y]


def _ce_via_probs(logits, y):
    m = logits.max(1, keepdim=True).values
    e = torch.exp(logits - m)
    return -torch.log(_pick(e / e.sum(1, keepdim=True), y))


def _acc_fraction(y_hat, y):
    n = y.numel()
    return accuracy(y_hat, y) / n if n else accuracy(y_hat, y)


def _acc_axis0(y_hat, y):
    if y_hat.dim() != 2:
        return None
    return float((y_hat.argmax(0) == y).sum()) if y_hat.shape[0] == y_hat.shape[1] else math.nan


def _acc_labels_argmax(y_hat, y):
    return float((y_hat.argmax() == y).sum()) if y_hat.dim() != 2 else None


def _simulate(kind, batches, init, lr, mode="ok"):
    """One epoch of the reference (`mode` "ok") or of a mistake ("flip": l.mean() and l.sum()
    swapped, "no_zero": the optimizer's gradients never reset) on a fresh net built as the
    student's is; the parameters after it and the loss and accuracy statistics."""
    net = build_scratch_net(*init) if kind == "scratch" else build_module_net(*init)
    params = net.params() if kind == "scratch" else list(net.parameters())
    updater = torch.optim.SGD(params, lr=lr) if kind == "optimizer" else build_updater(net, lr)
    loss = nn.CrossEntropyLoss(reduction="none")  # the loss the student's function is given
    opt = kind == "optimizer"
    sums, corrects, means, n = 0.0, 0.0, [], 0
    for X, y in batches:
        y_hat = net(X)
        l = loss(y_hat, y)
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
        n += y.numel()
    return {"params": net.param_values(), "sum": sums, "correct": corrects, "means": means,
            "n": n}


def train_epoch_outcome(kind, batches, init, lr):
    """What a correct train_epoch leaves: the parameters, and the pair it returns."""
    s = _simulate(kind, batches, init, lr)
    return {"params": s["params"], "loss": s["sum"] / s["n"], "accuracy": s["correct"] / s["n"]}


def _when(condition, fn):
    """fn, for the cases where a mistake applies (None otherwise: no such mistake)."""
    return lambda kind, *a: fn(kind, *a) if condition(kind) else None


REFERENCES = {
    "softmax": lambda X: _ref(softmax, X),
    "logsumexp": lambda X: _ref(logsumexp, X),
    "log_softmax": lambda X: _ref(log_softmax, X),
    "cross_entropy": lambda logits, y: _ref(cross_entropy, logits, y),
    "accuracy": accuracy,
    "train_epoch_outcome": train_epoch_outcome,
    "exp_range": exp_range,
    "softmax_ce_hessian": lambda o: _ref(softmax_ce_hessian, o),
    "bradley_terry": lambda o_a, o_b: bradley_terry(o_a.double(), o_b.double()).to(o_a.dtype),
}

_is_opt = lambda kind: kind == "optimizer"  # noqa: E731
_not_opt = lambda kind: kind != "optimizer"  # noqa: E731

LIKELY = {
    "softmax_ce_hessian": {
        "the -p p^T term is missing: d p_i / d o_j = p_i (delta_ij - p_j), so the Hessian is "
        "diag(p) - p p^T": lambda o: torch.diag(_p1(o.double())),
        "diag(p) is missing: d p_i / d o_j = p_i (delta_ij - p_j), so the Hessian is "
        "diag(p) - p p^T": lambda o: -torch.outer(_p1(o.double()), _p1(o.double())),
        "the sign is flipped: the Hessian is diag(p) - p p^T (positive semi-definite)":
            lambda o: torch.outer(_p1(o.double()), _p1(o.double())) - torch.diag(_p1(o.double())),
        "only the diagonal p (1 - p): the off-diagonal entries are -p_i p_j":
            lambda o: torch.diag(_p1(o.double()) * (1 - _p1(o.double()))),
        "exp overflows (inf / inf = NaN): compute p with a stable softmax (subtract the max)":
            lambda o: torch.diag(_naive_p1(o)) - torch.outer(_naive_p1(o), _naive_p1(o)),
    },
    "bradley_terry": {
        "exp overflows (inf / inf = NaN): exp(o_a) / (exp(o_a) + exp(o_b)) equals "
        "1 / (1 + exp(o_b - o_a)), which only depends on the difference":
            lambda a, b: torch.exp(a) / (torch.exp(a) + torch.exp(b)),
        "the scores are used as weights (o_a / (o_a + o_b)): the softmax exponentiates them":
            lambda a, b: a / (a + b),
        "the probability of choosing b: P(a) = 1 / (1 + exp(o_b - o_a)) grows with o_a":
            lambda a, b: 1 / (1 + torch.exp(a.double() - b.double())),
        "exp(o_a - o_b) is not a probability: normalise, exp(o_a) / (exp(o_a) + exp(o_b))":
            lambda a, b: torch.exp(a.double() - b.double()),
    },
    "softmax": {
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
    },
    "logsumexp": {
        "exp overflows to inf (or underflows to 0, log 0 = -inf): a naive log(sum(exp(X))); "
        "subtract each row's max m, then add it back: m + log(sum(exp(X - m)))": _lse_naive,
        "the max of the whole matrix (global max) is subtracted; rows far below it underflow "
        "to log(0) = -inf: use each row's own max": _lse_global_max,
        "the max is subtracted inside the exp but not added back: m + log(sum(exp(X - m)))":
            _lse_forgot_max,
        "reduced over the wrong axis (dim=0): each row's log-sum-exp is over dim=1": _lse_axis0,
        "a mean instead of a sum inside the log": _lse_with_mean,
        "the max alone (the log-sum-exp is a smooth max, but not the max)":
            lambda X: X.max(1).values,
    },
    "log_softmax": {
        "log(softmax(X)): a probability that underflows to 0 gives log(0) = -inf; compute "
        "X - logsumexp(X) instead, which needs no exp of the result": _ls_via_softmax,
        "exp overflows or underflows: a naive log-sum-exp (subtract each row's max)":
            lambda X: X - _lse_naive(X).reshape(-1, 1),
        "logsumexp(X) of shape (n,) was broadcast along the wrong axis: reshape it to (n, 1)":
            lambda X: X - logsumexp(X),
        "the max of the whole matrix (global max) is subtracted; rows far below it underflow":
            lambda X: X - _lse_global_max(X).reshape(-1, 1),
        "normalised over the wrong axis (dim=0)":
            lambda X: X - logsumexp(X.T).reshape(1, -1),
    },
    "cross_entropy": {
        "the logits are treated as probabilities (-log(y_hat[i, y[i]]), D2L's cross_entropy of "
        "softmax outputs): this function receives raw logits; compute "
        "logsumexp(logits) - logits[i, y[i]]": lambda logits, y: -torch.log(_pick(logits, y)),
        "-log(softmax(logits)[i, y[i]]): a probability that underflows to 0 gives an infinite "
        "loss; compute from logits: logsumexp(logits) - logits[i, y[i]]": _ce_via_probs,
        "exp overflows or underflows: a naive softmax or log-sum-exp (subtract each row's max)":
            lambda logits, y: -torch.log(_pick(_naive_softmax(logits), y)),
        "the sign is flipped: the loss is -log p, not log p": lambda logits, y: -cross_entropy(
            logits, y),
        "the log-sum-exp is missing (only -logits[i, y[i]])": lambda logits, y: -_pick(logits, y),
    },
    "accuracy": {
        "the fraction correct instead of the number of correct predictions (do not divide "
        "by the number of examples)": _acc_fraction,
        "argmax over the wrong axis (dim=0): the predicted class of example i is the "
        "argmax of row i (dim=1)": _acc_axis0,
        "a 1-D y_hat already holds predicted labels: compare it with y directly":
            _acc_labels_argmax,
    },
    "train_epoch_outcome": {
        "with an optimizer, back-propagate l.mean() (not l.sum()), so the step does not grow "
        "with the batch size": _when(_is_opt, lambda *a: {
            "params": _simulate(*a, mode="flip")["params"]}),
        "with a custom updater, back-propagate l.sum(): the updater divides by the batch "
        "size itself, so l.mean() divides twice": _when(_not_opt, lambda *a: {
            "params": _simulate(*a, mode="flip")["params"]}),
        "the gradients are not reset: call updater.zero_grad() before each backward pass, or "
        "they accumulate over minibatches": _when(_is_opt, lambda *a: {
            "params": _simulate(*a, mode="no_zero")["params"]}),
        "the parameters were not updated (no updater step / updater call)":
            lambda kind, batches, init, lr: {"params": [p.clone() for p in init]},
        "the summed loss instead of the mean per example (divide by the number of examples)":
            lambda *a: {"loss": _simulate(*a)["sum"]},
        "the mean of the batch means: batches of different sizes must be weighted by their "
        "size (sum l.sum() over batches, divide by the number of examples)":
            lambda *a: {"loss": (lambda m: sum(m) / len(m))(_simulate(*a)["means"])},
        "the loss of the last minibatch only": lambda *a: {"loss": _simulate(*a)["means"][-1]},
        "the number correct instead of the fraction (divide by the number of examples)":
            lambda *a: {"accuracy": _simulate(*a)["correct"]},
        "a percentage instead of a fraction":
            lambda *a: {"accuracy": (lambda s: 100 * s["correct"] / s["n"])(_simulate(*a))},
    },
    "exp_range": {
        "log10 instead of the natural log (math.log)":
            lambda dtype: (math.log10(torch.finfo(dtype).tiny), math.log10(torch.finfo(dtype).max)),
        "eps (the gap after 1) instead of tiny (the smallest positive normal number)":
            lambda dtype: (math.log(torch.finfo(dtype).eps), exp_range(dtype)[1]),
        "the range of float32 whatever the dtype: use torch.finfo(dtype)":
            lambda dtype: exp_range(torch.float32),
        "lo = -hi: the format's range is not symmetric in the exponent; use finfo.tiny":
            lambda dtype: (-exp_range(dtype)[1], exp_range(dtype)[1]),
        "the smallest subnormal number (tiny * eps) instead of tiny, the smallest normal "
        "one (below tiny, exp(x) loses precision)":
            lambda dtype: (math.log(torch.finfo(dtype).tiny * torch.finfo(dtype).eps),
                           exp_range(dtype)[1]),
    },
}


# --- hidden inputs -------------------------------------------------------------------------------


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


def _row_inputs():
    """(label, X, weight) of the hidden cases of the row-wise functions."""
    return ([(label, X, 1) for label, X in _random_inputs()]
            + [(label, X, 2) for label, X in _extreme_inputs()])


# --- hidden checks -------------------------------------------------------------------------------


@CHAPTER.hidden("softmax")
def hidden_softmax(t, softmax_):
    for label, X, weight in _row_inputs():
        with t.case(label, weight=weight):
            softmax_case(t, softmax_, X, _ref(softmax, X), LIKELY["softmax"])


@CHAPTER.hidden("logsumexp")
def hidden_logsumexp(t, lse_):
    for label, X, weight in _row_inputs():
        with t.case(label, weight=weight):
            log_case(t, lse_, X, _ref(logsumexp, X), LIKELY["logsumexp"])
    with t.case("adding b to a row adds b to its log-sum-exp (D2L 4.1, exercise 6): rows "
                "shifted by -700, 0, 300 and 800, float64"):
        X = randn(4, 6, seed=90, dtype=torch.float64)
        shift = torch.tensor([[-700.0], [0.0], [300.0], [800.0]], dtype=torch.float64)
        log_case(t, lse_, X + shift, logsumexp(X) + shift.reshape(-1), LIKELY["logsumexp"])


@CHAPTER.hidden("log_softmax")
def hidden_log_softmax(t, ls_):
    for label, X, weight in _row_inputs():
        with t.case(label, weight=weight):
            log_case(t, ls_, X, _ref(log_softmax, X), LIKELY["log_softmax"])


def _ce(t, ce_, logits, y):
    likely = {c: (lambda f=f: f(logits.clone(), y.clone()))
              for c, f in LIKELY["cross_entropy"].items()}
    ce_case(t, ce_, logits, y, _ref(cross_entropy, logits, y), likely)


@CHAPTER.hidden("cross_entropy")
def hidden_cross_entropy(t, ce_):
    cases = [(label, X) for label, X in _random_inputs() if X.shape[1] > 1]
    for i, (label, X) in enumerate(cases):
        y = torch.randint(0, X.shape[1], (X.shape[0],), generator=gen(100 + i))
        with t.case(label):
            _ce(t, ce_, X, y)
    for i, (label, X) in enumerate(_extreme_inputs()):
        # the labels of the smallest logits: large but finite losses
        y = X.argmin(dim=1) if i % 2 else torch.randint(0, X.shape[1], (X.shape[0],),
                                                         generator=gen(200 + i))
        with t.case(label, weight=2):
            _ce(t, ce_, X, y)
    with t.case("one example (n = 1)"):
        _ce(t, ce_, torch.tensor([[3.0, -1.0, 0.0, 2.0]]), torch.tensor([3]))


def _acc(t, acc_, y_hat, y):
    likely = {}
    for cause, f in LIKELY["accuracy"].items():
        try:
            likely[cause] = f(y_hat.clone(), y.clone())
        except Exception:  # noqa: BLE001 - a mistake that does not run on these inputs
            likely[cause] = None
    accuracy_case(t, acc_, y_hat, y, accuracy(y_hat, y), likely)


@CHAPTER.hidden("accuracy")
def hidden_accuracy(t, acc_):
    for i, (n, q) in enumerate(((10, 3), (4, 4), (5, 5), (100, 10), (1, 2))):
        y_hat = randn(n, q, seed=300 + i, dtype=DTYPES[i % 2])
        y = torch.randint(0, q, (n,), generator=gen(400 + i))
        y[: n // 2] = y_hat[: n // 2].argmax(1)  # about half correct
        with t.case(f"y_hat ({n}, {q}) of logits"):
            _acc(t, acc_, y_hat, y)
    with t.case("none correct and all correct"):
        X = randn(6, 4, seed=500)
        _acc(t, acc_, X, (X.argmax(1) + 1) % 4)
        _acc(t, acc_, X, X.argmax(1))
    with t.case("1-D y_hat of predicted labels (int64)"):
        _acc(t, acc_, torch.tensor([0, 2, 1, 1, 3]), torch.tensor([0, 2, 2, 1, 0]))
    with t.case("1-D y_hat of predicted labels stored as floats"):
        _acc(t, acc_, torch.tensor([1.0, 0.0, 2.0]), torch.tensor([1, 1, 2]))


@CHAPTER.hidden("train_epoch")
def hidden_train_epoch(t, train_epoch_):
    for i, (kind, sizes, d, q, dtype, lr) in enumerate((
            ("optimizer", (8, 8, 8, 3), 6, 5, torch.float64, 0.3),
            ("optimizer", (5,), 3, 3, torch.float32, 1.0),
            ("scratch", (16, 16, 1), 5, 4, torch.float64, 0.1),
            ("scratch", (3, 3), 2, 2, torch.float32, 2.0),
            ("module", (6, 6, 4), 4, 4, torch.float32, 0.4),
            ("module", (10, 7), 8, 3, torch.float64, 0.2))):
        batches, init = train_inputs(kind, 20 + 7 * i, sizes, d, q, dtype)
        with t.case(f"{kind}: batches of {', '.join(map(str, sizes))}, {d} features, {q} "
                    f"classes, {dtype}"):
            train_case(t, train_epoch_, kind, batches, init, lr,
                       t.ref("train_epoch_outcome", kind, batches, init, lr),
                       t.likely("train_epoch_outcome", kind, batches, init, lr))


@CHAPTER.hidden("exp_range")
def hidden_exp_range(t, exp_range_):
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        with t.case(f"{dtype}"):
            exp_range_case(t, exp_range_, dtype, exp_range(dtype),
                           {c: f(dtype) for c, f in LIKELY["exp_range"].items()})


@CHAPTER.hidden("softmax_ce_hessian")
def hidden_softmax_ce_hessian(t, fn):
    likely = LIKELY["softmax_ce_hessian"]
    for i, (q, scale, dtype) in enumerate(itertools.product((1, 2, 5, 10), (1.0, 30.0),
                                                            DTYPES)):
        o = randn(q, seed=i, dtype=dtype, scale=scale)
        with t.case(f"q = {q}, logits of size {scale:g}, {dtype}"):
            hessian_case(t, fn, o, _ref(softmax_ce_hessian, o), likely)
    with t.case("logits of +-1e4"):
        o = torch.tensor([1e4, -1e4, 9999.0, 0.0], dtype=torch.float64)
        hessian_case(t, fn, o, softmax_ce_hessian(o), likely)
    with t.case("adding a constant to every logit changes nothing"):
        o = randn(6, seed=40, dtype=torch.float64) + 500
        hessian_case(t, fn, o, softmax_ce_hessian(o - 500), likely)


@CHAPTER.hidden("bradley_terry")
def hidden_bradley_terry(t, fn):
    likely = LIKELY["bradley_terry"]
    for i, (shape, scale, dtype) in enumerate(itertools.product(((7,), (3, 4)), (1.0, 20.0, 1e3),
                                                                DTYPES)):
        o_a = randn(*shape, seed=i, dtype=dtype, scale=scale)
        o_b = randn(*shape, seed=50 + i, dtype=dtype, scale=scale)
        with t.case(f"scores of shape {shape} and size {scale:g}, {dtype}"):
            bt_case(t, fn, o_a, o_b,
                    bradley_terry(o_a.double(), o_b.double()).to(dtype), likely)
    with t.case("equal scores give 1/2; +-1e4"):
        o_a = torch.tensor([3.0, -1e4, 1e4, 0.0, 1e4])
        o_b = torch.tensor([3.0, 1e4, -1e4, 0.0, 1e4])
        bt_case(t, fn, o_a, o_b, bradley_terry(o_a.double(), o_b.double()).float(), likely)
