"""02_softmax: the visible checks (worked examples) of each exercise.

Public: this module ships to students. Reference values come from `t.ref`, and what likely
mistakes produce from `t.likely`; the references and the hidden checks are the instructor's
(`grader.chapters.softmax`). The objects `train_epoch` is given (nets, updaters, a loss) are
built in the student's kernel by `grader.probes.softmax` and the generic builders.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from grader.cases import gen, randn
from grader.feedback import Mismatch, describe_inputs, expect_close, expect_pair, expect_tensor, fmt_number
from grader.registry import Chapter
from grader.remote import Handle

CHAPTER = Chapter("02_softmax", "Softmax regression and numerical stability")

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


def mag(X):
    """The size of the largest entry (at least 1): rounding errors grow with it."""
    return max(1.0, float(X.detach().abs().max())) if X.numel() else 1.0


def prob_tol(dtype, M):
    """Probabilities exp(x - c): a relative error of about eps * M from rounding x - c."""
    eps = _eps(dtype)
    return {"atol": eps, "rtol": max(1e-4 if dtype != torch.float64 else 1e-10, 16 * eps * M)}


def log_tol(dtype, M):
    """Values of size up to M (log-probabilities, log-sum-exp): an absolute error eps * M."""
    eps = _eps(dtype)
    return {"atol": 16 * eps * M, "rtol": 1e-5 if dtype != torch.float64 else 1e-12}


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _type_of(x) -> str:
    return x.type_name if isinstance(x, Handle) else type(x).__name__


# --- softmax, logsumexp, log_softmax: one row-wise function of X -------------------------------

def softmax_case(t, softmax_, X, expected, likely):
    t.expect(softmax_, dict(X=X), expected, likely=likely, forbidden=FROM_SCRATCH,
             **prob_tol(X.dtype, mag(X)))


def log_case(t, fn_, X, expected, likely):
    """logsumexp and log_softmax: values of the size of X's entries."""
    t.expect(fn_, dict(X=X), expected, likely=likely, forbidden=FROM_SCRATCH,
             **log_tol(X.dtype, mag(X)))


@CHAPTER.visible("softmax", points=2)
def visible_softmax(t, softmax_):
    for label, X in (
            ("worked example: X = [[1, 2, 3], [-1, 0, 1], [0, 0, 0]]",
             torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])),
            ("large logits: X = [[1000, 1001, 1002], [-1000, -1001, -1002]]",
             torch.tensor([[1000.0, 1001.0, 1002.0], [-1000.0, -1001.0, -1002.0]]))):
        with t.case(label):
            softmax_case(t, softmax_, X, t.ref("softmax", X), t.likely("softmax", X))


@CHAPTER.visible("logsumexp", points=2)
def visible_logsumexp(t, lse_):
    for label, X in (
            ("worked example: X = [[0, 0], [1, 2], [-1, 3]]",
             torch.tensor([[0.0, 0.0], [1.0, 2.0], [-1.0, 3.0]])),
            ("large logits: X = [[1000, 1000], [-1000, -1002]] gives [1000.6931, -999.8731]",
             torch.tensor([[1000.0, 1000.0], [-1000.0, -1002.0]]))):
        with t.case(label):
            log_case(t, lse_, X, t.ref("logsumexp", X), t.likely("logsumexp", X))


@CHAPTER.visible("log_softmax", points=1)
def visible_log_softmax(t, ls_):
    for label, X in (
            ("worked example: X = [[1, 2, 3], [0, 0, 0]]",
             torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])),
            ("a probability below float32's range: X = [[0, -200]] gives [[0, -200]]",
             torch.tensor([[0.0, -200.0]]))):
        with t.case(label):
            log_case(t, ls_, X, t.ref("log_softmax", X), t.likely("log_softmax", X))


# --- cross_entropy ---------------------------------------------------------------------------

def ce_case(t, ce_, logits, y, expected, likely):
    what = f"cross_entropy(logits {tuple(logits.shape)}, y {tuple(y.shape)})"
    got = t.call(ce_, logits, y, what=what, forbidden=FROM_SCRATCH)
    n = logits.shape[0]
    if isinstance(got, torch.Tensor) and got.dim() == 2 and tuple(got.shape) == (n, n) and n > 1:
        raise Mismatch(f"{what} returned shape {(n, n)}, expected {(n,)}.{describe_inputs({'y': y})}"
                       "\n  likely cause: logits[:, y] picks the columns y for every row; pick one "
                       "entry per row with logits[torch.arange(n), y] or logits.gather(1, y[:, None])")
    expect_tensor(got, expected, what=what, inputs={"logits": logits, "y": y}, likely=likely,
                  **log_tol(logits.dtype, mag(logits)))


@CHAPTER.visible("cross_entropy", points=2)
def visible_cross_entropy(t, ce_):
    for label, logits, y in (
            ("worked example: two examples, three classes, y = [0, 2]",
             torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, -1.0]]), torch.tensor([0, 2])),
            ("extreme logits: [[0, 1000], [-1000, 0]] with y = [0, 1] gives [1000, 0]",
             torch.tensor([[0.0, 1000.0], [-1000.0, 0.0]]), torch.tensor([0, 1]))):
        with t.case(label):
            ce_case(t, ce_, logits, y, t.ref("cross_entropy", logits, y),
                    t.likely("cross_entropy", logits, y))


# --- accuracy ---------------------------------------------------------------------------------

def accuracy_case(t, acc_, y_hat, y, expected, likely):
    """`expected` the number correct; `likely` {cause: what that mistake returns (or None)}."""
    what = f"accuracy(y_hat {tuple(y_hat.shape)}, y {tuple(y.shape)})"
    got = t.call(acc_, y_hat, y, what=what)
    if isinstance(got, torch.Tensor):
        raise Mismatch(f"{what} returned a tensor ({got.dtype}, shape {tuple(got.shape)}), "
                       "expected a Python float.\n  likely cause: the count is not converted; "
                       "return float(...) of it (a tensor would keep the batch's memory alive "
                       "when added up over an epoch)")
    if isinstance(got, bool) or not isinstance(got, float):
        raise Mismatch(f"{what} returned {_type_of(got)} {got!r}, expected a Python float "
                       f"({fmt_number(expected)}).\n  likely cause: return float(count)")
    cause = next((c for c, v in (likely or {}).items() if _is_number(v) and abs(got - v) < 1e-6
                  and abs(v - expected) > 1e-6), None)
    expect_close(got, expected, what=what, atol=1e-6, inputs={"y_hat": y_hat, "y": y},
                 cause=cause)


@CHAPTER.visible("accuracy", points=1, d2l=("accuracy",))
def visible_accuracy(t, acc_):
    y_hat = torch.tensor([[0.1, 0.3, 0.6], [0.3, 0.2, 0.5], [0.8, 0.1, 0.1], [0.2, 0.7, 0.1]])
    y = torch.tensor([2, 0, 0, 2])
    with t.case("worked example: 4 examples, 3 classes, y = [2, 0, 0, 2]: 2 correct, 2.0"):
        accuracy_case(t, acc_, y_hat, y, t.ref("accuracy", y_hat, y),
                      t.likely("accuracy", y_hat, y))


# --- train_epoch ------------------------------------------------------------------------------

TRAIN_WHAT = {
    "optimizer": "train_epoch(net, train_iter, loss, torch.optim.SGD(...))",
    "scratch": "train_epoch(net, train_iter, loss, updater) with a from-scratch net (a plain "
               "function) and a custom updater",
    "module": "train_epoch(net, train_iter, loss, updater) with an nn.Module and a custom "
              "updater",
}


def train_data(seed, sizes, d, q, dtype):
    """Minibatches (X (s, 1, d), y (s,)) of the given sizes: a list of pairs."""
    n = sum(sizes)
    X = randn(n, 1, d, seed=seed, dtype=dtype)
    y = torch.randint(0, q, (n,), generator=gen(seed + 1))
    batches, i = [], 0
    for s in sizes:
        batches.append((X[i:i + s], y[i:i + s]))
        i += s
    return batches


def train_init(kind, seed, d, q, dtype):
    """The net's initial parameters: [W (d, q), b (q,)] from scratch, else Linear's [weight
    (q, d), bias (q,)]."""
    shape = (d, q) if kind == "scratch" else (q, d)
    return [randn(*shape, seed=seed, dtype=dtype), randn(q, seed=seed + 1, dtype=dtype)]


def _tols(dtype):
    return {"atol": 1e-5 if dtype == torch.float32 else 1e-10, "rtol": 1e-4}


def _close(a, b, dtype):
    return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
            and torch.allclose(a.double(), b.double(), **_tols(dtype)))


def _expect_number(got, expected, what, causes):
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    cause = None
    if _is_number(got):
        cause = next((c for c, v in causes.items() if _is_number(v)
                      and abs(got - v) <= 1e-5 * max(1, abs(v))
                      and abs(v - expected) > 1e-5 * max(1, abs(v))), None)
    expect_close(got, expected, what=what, atol=1e-5, rtol=1e-5, cause=cause)


def _part(likely, key):
    """{cause: value} of the likely mistakes that change `key` of the outcome."""
    return {c: v[key] for c, v in (likely or {}).items() if type(v) is dict and key in v}


def train_case(t, train_epoch_, kind, batches, init, lr, expected, likely):
    """One epoch of `train_epoch_` on a net of `kind` ("optimizer", "scratch" or "module")
    built with parameters `init`, judged against `expected` ({"params", "loss", "accuracy"})
    and `likely` ({cause: the part of the outcome that mistake changes, or None})."""
    dtype = init[0].dtype
    sizes = [int(y.shape[0]) for _, y in batches]
    net = t.build("softmax.scratch_net" if kind == "scratch" else "softmax.module_net", *init)
    updater = (t.build("optimizer", "SGD", net, lr=lr) if kind == "optimizer"
               else t.build("softmax.updater", net, lr))
    loss = t.build("loss", "CrossEntropyLoss", reduction="none")
    what = TRAIN_WHAT[kind]
    try:
        out = t.call(train_epoch_, net, batches, loss, updater, what=what, may_modify=True)
    except Mismatch as failure:
        if "has no attribute 'train'" in str(failure):
            raise Mismatch(f"{failure}\n  likely cause: here net is a plain function, not an "
                           "nn.Module; call net.train() only if isinstance(net, "
                           "torch.nn.Module)") from None
        raise
    expect_pair(out, what, "mean loss per example", "fraction correct")
    if kind != "scratch":
        modes = net.method("modes")
        if not modes:
            raise Mismatch(f"{what} never called net on a minibatch")
        if not all(modes):
            raise Mismatch(f"{what}: the net was in evaluation mode while training (it was "
                           "handed over in evaluation mode)\n  likely cause: net.train() is not "
                           "called; layers such as dropout behave differently in training mode")
    if kind != "optimizer":
        calls = updater.calls
        if calls != sizes:
            raise Mismatch(f"{what}: the updater was called with batch sizes {calls}, "
                           f"expected {sizes} (one call per minibatch)\n  likely cause: call "
                           "updater(X.shape[0]) once after each backward pass")
    params = net.method("param_values")
    alternatives = _part(likely, "params")
    for i, (got, want) in enumerate(zip(params, expected["params"])):
        if _close(got, want, dtype):
            continue
        cause = next((c for c, alt in alternatives.items()
                      if type(alt) is list and i < len(alt) and _close(got, alt[i], dtype)), None)
        expect_tensor(got, want, what=f"parameter {i} after {what}", **_tols(dtype),
                      likely={cause: got} if cause else None)
    mean_loss, frac = out
    _expect_number(mean_loss, expected["loss"], f"the mean loss returned by {what}",
                   _part(likely, "loss"))
    _expect_number(frac, expected["accuracy"], f"the fraction correct returned by {what}",
                   _part(likely, "accuracy"))


def train_inputs(kind, seed, sizes, d, q, dtype):
    """(batches, initial parameters) of one case."""
    return train_data(seed, sizes, d, q, dtype), train_init(kind, seed + 10, d, q, dtype)


@CHAPTER.visible("train_epoch", points=2, d2l=("train_epoch_ch3",))
def visible_train_epoch(t, train_epoch_):
    for label, kind, seed in (
            ("nn.Module with torch.optim.SGD: 10 examples in batches of 4, 4, 2", "optimizer", 0),
            ("a from-scratch net (a function) with a custom updater: batches of 4, 4, 2",
             "scratch", 1)):
        batches, init = train_inputs(kind, seed, (4, 4, 2), 4, 3, torch.float32)
        with t.case(label, weight=2):
            train_case(t, train_epoch_, kind, batches, init, 0.5,
                       t.ref("train_epoch_outcome", kind, batches, init, 0.5),
                       t.likely("train_epoch_outcome", kind, batches, init, 0.5))


# --- exp_range (D2L 4.5, exercise: the range of exp in each floating-point format) -----------

def exp_range_case(t, exp_range_, dtype, expected, likely):
    """`expected` the pair (lo, hi); `likely` {cause: the pair that mistake returns}."""
    what = f"exp_range({dtype})"
    out = t.call(exp_range_, dtype, what=what)
    if not isinstance(out, tuple | list) or len(out) != 2:
        raise Mismatch(f"{what} should return a pair (lo, hi) of floats, but returned "
                       f"{_type_of(out)}")
    for i, name in enumerate(("lo", "hi")):
        got, value = out[i], expected[i]
        cause = None
        if _is_number(got):
            cause = next((c for c, v in (likely or {}).items()
                          if isinstance(v, tuple | list) and len(v) == 2 and _is_number(v[i])
                          and abs(got - v[i]) < 1e-4 and abs(v[i] - value) > 1e-4), None)
        expect_close(got, value, what=f"{name} of {what}", atol=1e-4, rtol=1e-6, cause=cause)


@CHAPTER.visible("exp_range", points=1)
def visible_exp_range(t, exp_range_):
    with t.case("float32: exp(x) is a finite normal float32 for -87.34 < x < 88.72"):
        exp_range_case(t, exp_range_, torch.float32, t.ref("exp_range", torch.float32),
                       t.likely("exp_range", torch.float32))



# --- softmax_ce_hessian (D2L 4.1, exercise 1: the second derivative of the loss) ---------------

NO_AUTOGRAD = {torch.Tensor.backward: "Tensor.backward", torch.autograd.grad: "torch.autograd.grad",
               torch.autograd.backward: "torch.autograd.backward"}
NO_AUTOGRAD_PY = [("torch.autograd.functional", None, "torch.autograd.functional"),
                  ("torch._functorch", None, "torch.func")]


def hessian_case(t, fn, o, expected, likely):
    got = t.call(fn, o, what=f"softmax_ce_hessian(o of shape {tuple(o.shape)})",
                 forbidden={**FROM_SCRATCH, **NO_AUTOGRAD}, forbidden_python=NO_AUTOGRAD_PY)
    # diag(p) - p p^T cancels on the diagonal when one p is near 1: an absolute error eps * M
    tols = {**prob_tol(o.dtype, mag(o)), "atol": 16 * _eps(o.dtype) * mag(o)}
    expect_tensor(got, expected, what=f"softmax_ce_hessian(o of shape {tuple(o.shape)})",
                  inputs={"o": o}, likely=likely, **tols)


@CHAPTER.visible("softmax_ce_hessian", points=1)
def visible_softmax_ce_hessian(t, fn):
    for label, o in (("worked example: o = [1, 2, 3]", torch.tensor([1.0, 2.0, 3.0])),
                     ("large logits: o = [1000, 999, -1000]",
                      torch.tensor([1000.0, 999.0, -1000.0]))):
        with t.case(label):
            hessian_case(t, fn, o, t.ref("softmax_ce_hessian", o),
                         t.likely("softmax_ce_hessian", o))


# --- bradley_terry (D2L 4.1, exercise 4: a softmax over two scores) ------------------------------


def bt_case(t, fn, o_a, o_b, expected, likely):
    what = f"bradley_terry(o_a, o_b) of shape {tuple(o_a.shape)}"
    got = t.call(fn, o_a, o_b, what=what, forbidden=FROM_SCRATCH)
    M = max(mag(o_a), mag(o_b))
    expect_tensor(got, expected, what=what, inputs={"o_a": o_a, "o_b": o_b}, likely=likely,
                  **prob_tol(o_a.dtype, M))


@CHAPTER.visible("bradley_terry", points=1)
def visible_bradley_terry(t, fn):
    for label, o_a, o_b in (
            ("worked example: o_a = [0, 1, 2], o_b = [0, 0, 3]",
             torch.tensor([0.0, 1.0, 2.0]), torch.tensor([0.0, 0.0, 3.0])),
            ("large scores: o_a = [1000, -1000], o_b = [999, -998]",
             torch.tensor([1000.0, -1000.0]), torch.tensor([999.0, -998.0]))):
        with t.case(label):
            bt_case(t, fn, o_a, o_b, t.ref("bradley_terry", o_a, o_b),
                    t.likely("bradley_terry", o_a, o_b))
