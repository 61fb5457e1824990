"""01_linear_regression: linear regression and maximum likelihood (D2L 3.1-3.5).

Reference implementations first, then one check per exercise. A check's first cases are the
visible ones (a worked example, fast); the rest run only when grading (`t.hidden`).
"""

from __future__ import annotations

import itertools
import math
import os

import torch

from grader.cases import DTYPES, expect_stat, gen, randn, tol
from grader.feedback import Mismatch, expect_close, expect_pair, expect_tensor, fmt_number
from grader.registry import Chapter

CHAPTER = Chapter("01_linear_regression", "Linear regression and maximum likelihood")

# --- references ---------------------------------------------------------------------------


def synthetic_data(w, b, num_examples, noise=0.01, generator=None):
    X = torch.randn(num_examples, len(w), generator=generator, dtype=w.dtype)
    y = X @ w.reshape(-1) + b + noise * torch.randn(num_examples, generator=generator,
                                                    dtype=w.dtype)
    return X, y.reshape(-1, 1)


def linreg(X, w, b):
    return X @ w + b


def squared_loss(y_hat, y):
    return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2


def gaussian_nll(y_hat, y, sigma):
    r = y.reshape(y_hat.shape) - y_hat
    return (0.5 * torch.log(2 * math.pi * torch.as_tensor(sigma, dtype=torch.float64) ** 2)
            + r.to(torch.float64) ** 2 / (2 * torch.as_tensor(sigma, dtype=torch.float64) ** 2)
            ).mean().to(y_hat.dtype)


def _design(X):
    return torch.cat([X, torch.ones(X.shape[0], 1, dtype=X.dtype)], dim=1)


def fit_normal_equation(X, y):
    sol = torch.linalg.lstsq(_design(X.double()), y.double().reshape(-1, 1)).solution
    return sol[:-1].to(X.dtype), sol[-1].reshape(1).to(X.dtype)


def huber_loss(y_hat, y, delta=1.0):
    r = y_hat - y.reshape(y_hat.shape)
    return torch.where(r.abs() <= delta, 0.5 * r ** 2, delta * (r.abs() - delta / 2))


def max_stable_lr(X):
    A = _design(X.double())
    return 2.0 / torch.linalg.eigvalsh(A.T @ A / A.shape[0]).max().item()


# --- shared pieces of the checks ---------------------------------------------------------

NO_ITERATION = {torch.Tensor.backward: "Tensor.backward", torch.autograd.grad: "torch.autograd.grad",
                torch.autograd.backward: "torch.autograd.backward"}
OPTIM_DIR = (os.path.join(os.path.dirname(torch.__file__), "optim"), None)


# --- synthetic_data -------------------------------------------------------------------------


def _synthetic_stats(t, synthetic_data, w, b, n, noise, seed, label):
    with t.case(f"{label}: shapes, dtype and the distribution of X and y", weight=2):
        out = t.call(synthetic_data, w, b, n, noise, gen(seed),
                     what=f"synthetic_data(w, b, {n}, noise={noise}, generator=g)")
        X, y = expect_pair(out, "synthetic_data", "X", "y")
        d = len(w)
        for name, got, shape in (("X", X, (n, d)), ("y", y, (n, 1))):
            if not isinstance(got, torch.Tensor):
                raise Mismatch(f"{name} should be a torch.Tensor, got {type(got).__name__}")
            if got.dtype != w.dtype:
                raise Mismatch(f"{name} has dtype {got.dtype}, expected {w.dtype} (w's dtype)\n"
                               "  likely cause: torch.normal/randn without dtype=w.dtype")
            if tuple(got.shape) != shape:
                raise Mismatch(f"{name} has shape {tuple(got.shape)}, expected {shape}"
                               + ("\n  likely cause: y not reshaped to (num_examples, 1)"
                                  if name == "y" else ""))
        Xd, yd = X.double(), y.double().reshape(-1)
        N = Xd.numel()
        expect_stat(Xd.mean().item(), 0.0, 1 / math.sqrt(N), "the mean of X")
        expect_stat(Xd.var().item(), 1.0, math.sqrt(2 / N), "the variance of X",
                    "X should be standard normal: torch.randn or torch.normal(0, 1, ...)")
        if d > 1:
            corr = torch.corrcoef(Xd.T)[0, 1].item()
            expect_stat(corr, 0.0, 1 / math.sqrt(n), "the correlation of two columns of X",
                        "the columns of X should be independent")
        r = yd - Xd @ w.double().reshape(-1) - float(torch.as_tensor(b).reshape(-1)[0])
        if noise == 0:
            if r.abs().max() > 1e-4 * (1 + Xd.abs().max()):
                raise Mismatch("with noise=0, y should equal X @ w + b exactly\n"
                               "  likely cause: the noise is not multiplied by `noise`, or b is "
                               "missing")
            return
        expect_stat(r.mean().item(), 0.0, noise / math.sqrt(n),
                    "the mean of the noise y - (X @ w + b)", "the bias b is missing or wrong")
        expect_stat(r.std().item(), noise, noise / math.sqrt(2 * n),
                    "the standard deviation of the noise y - (X @ w + b)",
                    "the noise should be `noise * N(0, 1)`")
        corr = torch.corrcoef(torch.stack([Xd[:, 0], r]))[0, 1].item()
        expect_stat(corr, 0.0, 1 / math.sqrt(n), "the correlation of X and the noise")


def _reproducible(t, fn, make_args, what):
    """Same generator seed -> same result, whatever the global random state."""
    with t.case("all randomness comes from `generator`"):
        torch.manual_seed(1)
        first = t.call(fn, *make_args(7), what=what)
        torch.manual_seed(2)
        second = t.call(fn, *make_args(7), what=what)
        third = t.call(fn, *make_args(8), what=what)
        flat = lambda out: torch.cat([torch.as_tensor(x).double().flatten() for x in out])
        a, b, c = flat(first), flat(second), flat(third)
        if a.shape != b.shape or not torch.equal(a, b):
            raise Mismatch(f"{what}: two calls with generators of the same seed gave different "
                           "results\n  likely cause: a random function called without "
                           "`generator=generator`, so it uses the global random state")
        if a.shape == c.shape and torch.equal(a, c):
            raise Mismatch(f"{what}: generators of different seeds gave the same result\n"
                           "  likely cause: the generator is not used, or re-seeded inside")


@CHAPTER.exercise("synthetic_data", points=2, d2l=("synthetic_data",))
def check_synthetic_data(t, synthetic_data):
    w32 = torch.tensor([2.0, -3.4])
    _synthetic_stats(t, synthetic_data, w32, 4.2, 2000, 0.01, 0, "w = [2, -3.4], b = 4.2")
    _reproducible(t, synthetic_data, lambda s: (w32, 4.2, 50, 0.01, gen(s)),
                  "synthetic_data(w, b, 50, generator=g)")
    if not t.hidden:
        return
    w64 = torch.tensor([0.5, 1.0, -2.0], dtype=torch.float64)
    _synthetic_stats(t, synthetic_data, w64, -1.5, 20000, 0.5, 1, "float64 w of 3, noise 0.5")
    _synthetic_stats(t, synthetic_data, w32.reshape(2, 1), 3.0, 5000, 0.2, 2, "w of shape (2, 1)")
    _synthetic_stats(t, synthetic_data, torch.tensor([1.5]), 0.0, 3000, 0.0, 3, "noise = 0")
    with t.case("default noise and no generator"):
        out = t.call(synthetic_data, w32, 4.2, 10, what="synthetic_data(w, b, 10)")
        X, y = expect_pair(out, "synthetic_data", "X", "y")
        expect_tensor(y, linreg(X, w32.reshape(-1, 1), 4.2), what="y for the default noise 0.01",
                      atol=0.1, rtol=0)


# --- data_iter ------------------------------------------------------------------------------


def _batches(t, data_iter, batch_size, features, labels, g, what):
    out = t.call(data_iter, batch_size, features, labels, g, what=what)
    try:
        batches = list(out)
    except TypeError:
        raise Mismatch(f"{what} should yield minibatches (use `yield`), but returned "
                       f"{type(out).__name__}") from None
    except NotImplementedError:
        raise
    except Exception as exc:
        raise Mismatch(f"{what} raised {type(exc).__name__} while iterating: {exc}") from None
    for i, item in enumerate(batches):
        X, y = expect_pair(item, f"minibatch {i} of {what}", "X", "y")
        if not isinstance(X, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise Mismatch(f"minibatch {i} of {what} should be a pair of tensors")
        if X.shape[0] != y.shape[0]:
            raise Mismatch(f"minibatch {i}: X has {X.shape[0]} rows but y has {y.shape[0]}")
    return batches


def _one_pass(t, data_iter, n, batch_size, seed, dtype=torch.float32):
    """Run one pass; return the visiting order of example indices."""
    features = torch.stack([torch.arange(n, dtype=dtype), randn(n, seed=seed, dtype=dtype)], 1)
    labels = (10 * torch.arange(n, dtype=dtype)).reshape(-1, 1)
    what = f"data_iter({batch_size}, features, labels, generator=g) over {n} examples"
    batches = _batches(t, data_iter, batch_size, features, labels, gen(seed), what)
    sizes = [b[0].shape[0] for b in batches]
    expected_sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    if sorted(sizes, reverse=True) != expected_sizes or sizes[:-1] != [batch_size] * (len(sizes) - 1):
        raise Mismatch(f"{what}: batch sizes {sizes[:6]}{' ...' if len(sizes) > 6 else ''}, "
                       f"expected {len(expected_sizes)} batches of {batch_size}"
                       + (f" with a last one of {n % batch_size}" if n % batch_size else "")
                       + "\n  likely cause: the slice end should be min(i + batch_size, n)")
    X = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1].reshape(b[0].shape[0], -1) for b in batches])
    if X.shape[1:] != features.shape[1:]:
        raise Mismatch(f"{what}: minibatch features have shape {tuple(X.shape[1:])} per example, "
                       f"expected {tuple(features.shape[1:])}")
    order = X[:, 0].round().long()
    if sorted(order.tolist()) != list(range(n)):
        missing = sorted(set(range(n)) - set(order.tolist()))
        raise Mismatch(f"{what}: one pass should visit every example exactly once; "
                       f"{len(missing)} examples were never visited and "
                       f"{n - len(set(order.tolist()))} were visited twice"
                       "\n  likely cause: sampling with replacement (randint) instead of a "
                       "permutation of the indices")
    if not torch.equal(y.reshape(-1), labels.reshape(-1)[order]) or not torch.equal(
            X, features[order]):
        raise Mismatch(f"{what}: the labels in a minibatch do not belong to its features\n"
                       "  likely cause: features and labels indexed with different indices")
    return order


@CHAPTER.exercise("data_iter", points=2, d2l=("data_iter",))
def check_data_iter(t, data_iter):
    with t.case("10 examples in batches of 3: every example once, last batch smaller"):
        _one_pass(t, data_iter, 10, 3, 0)
    with t.case("the order is random and comes from `generator`"):
        orders = [tuple(_one_pass(t, data_iter, 20, 4, s).tolist()) for s in (1, 1, 2)]
        if orders[0] == tuple(range(20)):
            raise Mismatch("data_iter visits the examples in their original order\n"
                           "  likely cause: the indices are not shuffled")
        if orders[0] != orders[1]:
            raise Mismatch("two passes with generators of the same seed gave different orders\n"
                           "  likely cause: shuffling without `generator=generator`")
        if orders[0] == orders[2]:
            raise Mismatch("generators of different seeds gave the same order\n"
                           "  likely cause: the generator is not used")
    if not t.hidden:
        return
    for n, bs in ((100, 10), (101, 7), (5, 8), (64, 64)):
        with t.case(f"{n} examples in batches of {bs}"):
            _one_pass(t, data_iter, n, bs, 10 + n, dtype=torch.float64)
    with t.case("the permutation is uniform (statistical)", weight=2):
        n, passes = 20, 400
        first = torch.zeros(n)
        adjacent = 0
        for s in range(passes):
            order = _one_pass(t, data_iter, n, 5, 1000 + s)
            first[order[0]] += 1
            adjacent += int(((order[1:] - order[:-1]) == 1).sum())
        expected_adj = (n - 1) / n  # expected successor pairs (i, i+1) per random permutation
        expect_stat(adjacent / passes, expected_adj, math.sqrt(1.0 / passes),
                    "the number of neighbours (i, i+1) kept together per pass",
                    "consecutive examples stay together: shuffle the examples, not the batches")
        p = 1 / n
        for i in (0, n - 1):
            expect_stat(first[i].item() / passes, p, math.sqrt(p * (1 - p) / passes),
                        f"how often example {i} comes first",
                        "not a uniform random order (e.g. a random rotation, or shuffling "
                        "only within batches)")


# --- linreg, squared_loss, huber_loss ----------------------------------------------------------

SHAPES = ((5, 3), (4, 4), (1, 6), (64, 1))


@CHAPTER.exercise("linreg", points=1, d2l=("linreg",))
def check_linreg(t, linreg_):
    likely = {"the bias b is not added": lambda X, w, b: X @ w,
              "the bias is subtracted": lambda X, w, b: X @ w - b,
              "w is transposed (X @ w.T)": lambda X, w, b: X @ w.T + b}
    X = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, -6.0]])
    w, b = torch.tensor([[1.0], [-1.0]]), torch.tensor([0.5])
    with t.case("worked example: X (3, 2), w (2, 1), b (1,)"):
        t.expect(linreg_, dict(X=X, w=w, b=b), linreg(X, w, b), likely=likely)
    if not t.hidden:
        return
    for i, ((n, d), dtype) in enumerate(itertools.product(SHAPES, DTYPES)):
        X, w = randn(n, d, seed=i, dtype=dtype), randn(d, 1, seed=100 + i, dtype=dtype)
        b = randn(1, seed=200 + i, dtype=dtype)
        with t.case(f"X {tuple(X.shape)} {dtype}"):
            t.expect(linreg_, dict(X=X, w=w, b=b), linreg(X, w, b), likely=likely, **tol(dtype, d))
    with t.case("inputs near 1e4 (float32)"):
        X, w = randn(6, 3, seed=7, dtype=torch.float32, scale=1e4), randn(3, 1, seed=8)
        b = torch.tensor([3.0])
        ref = linreg(X.double(), w.double(), b.double()).float()
        t.expect(linreg_, dict(X=X, w=w.float(), b=b), ref, likely=likely, atol=1e-2, rtol=1e-5)


@CHAPTER.exercise("squared_loss", points=1, d2l=("squared_loss",))
def check_squared_loss(t, squared_loss_):
    likely = {"the square is not halved": lambda yh, y: (yh - y.reshape(yh.shape)) ** 2,
              "abs() instead of a square": lambda yh, y: (yh - y.reshape(yh.shape)).abs() / 2}
    y_hat = torch.tensor([[1.0], [2.5], [-1.0]])
    y = torch.tensor([1.5, 2.5, 1.0])
    with t.case("worked example: y_hat (3, 1), y (3,)"):
        t.expect(squared_loss_, dict(y_hat=y_hat, y=y), squared_loss(y_hat, y), likely=likely)
    if not t.hidden:
        return
    for i, (n, dtype, y_shape) in enumerate(itertools.product(
            (1, 4, 50), DTYPES, ("(n,)", "(n, 1)"))):
        y_hat = randn(n, 1, seed=i, dtype=dtype)
        y = randn(n, seed=50 + i, dtype=dtype)
        y = y.reshape(-1, 1) if y_shape == "(n, 1)" else y
        with t.case(f"y_hat ({n}, 1), y {y_shape}, {dtype}"):
            t.expect(squared_loss_, dict(y_hat=y_hat, y=y), squared_loss(y_hat, y), likely=likely,
                     **tol(dtype, 10))
    with t.case("y_hat of shape (n,)"):
        y_hat, y = randn(7, seed=3), randn(7, 1, seed=4)
        t.expect(squared_loss_, dict(y_hat=y_hat, y=y), squared_loss(y_hat, y), likely=likely)


@CHAPTER.exercise("huber_loss", points=2)
def check_huber_loss(t, huber_loss_):
    def likely(delta):
        def r(yh, y):
            return yh - y.reshape(yh.shape)
        return {
            "one switch for the whole batch (the condition must be elementwise: torch.where)":
                lambda yh, y, *a: (0.5 * r(yh, y) ** 2 if bool((r(yh, y).abs() <= delta).all())
                                   else delta * (r(yh, y).abs() - delta / 2)),
            "the linear part is delta*|r| - delta**2 (it should be delta*(|r| - delta/2))":
                lambda yh, y, *a: torch.where(r(yh, y).abs() <= delta, 0.5 * r(yh, y) ** 2,
                                              delta * r(yh, y).abs() - delta ** 2),
            "the quadratic part is not halved":
                lambda yh, y, *a: torch.where(r(yh, y).abs() <= delta, r(yh, y) ** 2,
                                              delta * (r(yh, y).abs() - delta / 2)),
            "delta is ignored (always 1)": lambda yh, y, *a: huber_loss(yh, y, 1.0),
            "the linear part is |r| - delta/2 (not multiplied by delta)":
                lambda yh, y, *a: torch.where(r(yh, y).abs() <= delta, 0.5 * r(yh, y) ** 2,
                                              r(yh, y).abs() - delta / 2),
        }
    y_hat = torch.tensor([[0.5], [3.0], [-2.0], [1.0]])
    y = torch.tensor([0.0, 0.0, 0.0, 0.0])
    with t.case("worked example, default delta = 1: residuals 0.5, 3, -2, 1"):
        t.expect(huber_loss_, dict(y_hat=y_hat, y=y), huber_loss(y_hat, y), likely=likely(1.0))
    if not t.hidden:
        return
    for i, (delta, dtype) in enumerate(itertools.product((0.5, 1.0, 2.0, 3.7), DTYPES)):
        r = torch.linspace(-3 * delta, 3 * delta, 25, dtype=torch.float64)
        r = torch.cat([r, torch.tensor([delta, -delta], dtype=torch.float64)])
        y = randn(r.numel(), seed=i, dtype=torch.float64)
        y_hat = (y + r).reshape(-1, 1)
        y_hat, y = y_hat.to(dtype), y.to(dtype)
        ref = huber_loss(y_hat.double(), y.double(), delta).to(dtype)
        with t.case(f"delta = {delta}, {dtype}, residuals in [-3 delta, 3 delta]"):
            t.expect(huber_loss_, dict(y_hat=y_hat, y=y, delta=delta), ref, likely=likely(delta),
                     **tol(dtype, 10 * delta))
    with t.case("all residuals small (quadratic regime), y of shape (n, 1)"):
        y_hat, y = randn(6, 1, seed=30) * 0.1, randn(6, 1, seed=31) * 0.1
        t.expect(huber_loss_, dict(y_hat=y_hat, y=y, delta=1.0), huber_loss(y_hat, y),
                 likely=likely(1.0), **tol(torch.float64))


# --- sgd -------------------------------------------------------------------------------------


def _grads(params, X, y):
    w, b = params[0], params[-1]
    loss = squared_loss(X @ w + b, y).sum()
    if len(params) == 3:
        loss = loss + (params[1] ** 2).sum()
    loss.backward()


def _make_params(shapes, dtype, seed):
    return [randn(*s, seed=seed + i, dtype=dtype).requires_grad_() for i, s in enumerate(shapes)]


def _sgd_case(t, sgd_, shapes, dtype, lr, batch_size, seed):
    params = _make_params(shapes, dtype, seed)
    X, y = randn(batch_size, shapes[0][0], seed=seed + 10, dtype=dtype), \
        randn(batch_size, 1, seed=seed + 11, dtype=dtype)
    what = f"sgd(params, lr={lr}, batch_size={batch_size})"
    expected = []
    for step in range(2):  # two steps: gradients that are not reset would accumulate
        _grads(params, X, y)
        grads = [p.grad.clone() for p in params]
        before = [p.detach().clone() for p in params]
        expected = [p - lr * g / batch_size for p, g in zip(before, grads)]
        listed = list(params)
        t.call(sgd_, listed, lr, batch_size, what=what, may_modify=True)
        for i, p in enumerate(params):
            if listed[i] is not p:
                raise Mismatch(f"{what} replaced params[{i}] in the list; update each tensor "
                               "in place (p -= ...) so the model sees the new values")
            if p.grad_fn is not None or not p.requires_grad:
                raise Mismatch(f"{what}: params[{i}] is no longer a leaf that requires grad\n"
                               "  likely cause: the update was recorded by autograd; do it "
                               "inside `with torch.no_grad():`")
            cause = {
                "the parameters did not change: `p = p - ...` makes a new tensor; update "
                "in place with `p -= ...`": before[i],
                "the gradient is not divided by batch_size": before[i] - lr * grads[i],
                "the update goes uphill (+ instead of -)": before[i] + lr * grads[i] / batch_size,
            }
            got = p.detach()
            for c, alt in cause.items():
                if torch.allclose(got, alt, **tol(dtype, 10)) and not torch.allclose(
                        alt, expected[i], **tol(dtype, 10)):
                    raise Mismatch(f"{what}: step {step + 1}, params[{i}] has wrong values\n"
                                   f"  likely cause: {c}")
            expect_tensor(got, expected[i], what=f"params[{i}] after step {step + 1} of {what}",
                          **tol(dtype, 10))
            if p.grad is not None and bool(p.grad.abs().max() > 0):
                raise Mismatch(f"{what}: after the update params[{i}].grad is not zero\n"
                               "  likely cause: the gradients are not reset (p.grad.zero_()), "
                               "so they accumulate over minibatches")


@CHAPTER.exercise("sgd", points=2, d2l=("sgd",))
def check_sgd(t, sgd_):
    with t.case("two steps on w (2, 1) and b (1,), lr 0.1, batch_size 4"):
        _sgd_case(t, sgd_, [(2, 1), (1,)], torch.float32, 0.1, 4, 0)
    if not t.hidden:
        return
    for i, (shapes, dtype, lr, bs) in enumerate((
            ([(3, 1), (1,)], torch.float64, 0.03, 10),
            ([(4, 1), (4, 4), (1,)], torch.float32, 0.5, 1),
            ([(5, 1), (1,)], torch.float64, 1.0, 7),
            ([(1, 1), (1,)], torch.float32, 0.001, 64))):
        with t.case(f"{len(shapes)} parameters, {dtype}, lr {lr}, batch_size {bs}"):
            _sgd_case(t, sgd_, shapes, dtype, lr, bs, 10 * (i + 1))


# --- gaussian_nll --------------------------------------------------------------------------


@CHAPTER.exercise("gaussian_nll", points=2)
def check_gaussian_nll(t, gaussian_nll_):
    def likely(sigma):
        s = float(sigma)

        def r(yh, y):
            return y.reshape(yh.shape) - yh
        return {
            "a sum over examples instead of the mean":
                lambda yh, y, *a: (0.5 * math.log(2 * math.pi * s ** 2)
                                   + r(yh, y) ** 2 / (2 * s ** 2)).sum(),
            "the log term is not halved: log(2 pi sigma^2) instead of 0.5 * log(2 pi sigma^2)":
                lambda yh, y, *a: (math.log(2 * math.pi * s ** 2)
                                   + r(yh, y) ** 2 / (2 * s ** 2)).mean(),
            "divided by 2 sigma instead of 2 sigma**2":
                lambda yh, y, *a: (0.5 * math.log(2 * math.pi * s ** 2)
                                   + r(yh, y) ** 2 / (2 * s)).mean(),
            "the log term is missing": lambda yh, y, *a: (r(yh, y) ** 2 / (2 * s ** 2)).mean(),
            "the constant 0.5 * log(2 pi) is missing (log(sigma) alone)":
                lambda yh, y, *a: (math.log(s) + r(yh, y) ** 2 / (2 * s ** 2)).mean(),
            "y is not reshaped like y_hat, so (n, 1) and (n,) broadcast to (n, n)":
                lambda yh, y, *a: (0.5 * math.log(2 * math.pi * s ** 2)
                                   + (y - yh) ** 2 / (2 * s ** 2)).mean(),
        }
    y_hat = torch.tensor([[1.0], [2.0], [0.0]])
    y = torch.tensor([1.5, 1.0, 0.0])
    with t.case("worked example: y_hat (3, 1), y (3,), sigma = 0.5"):
        t.expect(gaussian_nll_, dict(y_hat=y_hat, y=y, sigma=0.5), gaussian_nll(y_hat, y, 0.5),
                 likely=likely(0.5))
    if not t.hidden:
        return
    for i, (n, sigma, dtype) in enumerate(itertools.product((1, 10, 200), (0.1, 1.0, 3.0),
                                                            DTYPES)):
        y_hat, y = randn(n, 1, seed=i, dtype=dtype), randn(n, seed=40 + i, dtype=dtype)
        with t.case(f"n = {n}, sigma = {sigma}, {dtype}"):
            t.expect(gaussian_nll_, dict(y_hat=y_hat, y=y, sigma=sigma),
                     gaussian_nll(y_hat, y, sigma), likely=likely(sigma),
                     **tol(dtype, 1 / sigma ** 2 * 10))
    with t.case("sigma as a 0-d tensor, y of shape (n, 1)"):
        y_hat, y, sigma = randn(5, 1, seed=70), randn(5, 1, seed=71), torch.tensor(0.7,
                                                                                  dtype=torch.float64)
        t.expect(gaussian_nll_, dict(y_hat=y_hat, y=y, sigma=sigma),
                 gaussian_nll(y_hat, y, sigma), likely=likely(sigma))


# --- fit_normal_equation ---------------------------------------------------------------------


def _fit_case(t, fit, X, y, atol, rtol):
    what = f"fit_normal_equation(X {tuple(X.shape)}, y {tuple(y.shape)})"
    out = t.call(fit, X, y, what=what, forbidden=NO_ITERATION, forbidden_python=[OPTIM_DIR])
    w_hat, b_hat = expect_pair(out, what, "w", "b")
    w_ref, b_ref = fit_normal_equation(X, y)
    if isinstance(w_hat, torch.Tensor) and w_hat.shape[0] == X.shape[1] + 1:
        raise Mismatch(f"{what}: w has {w_hat.shape[0]} rows for {X.shape[1]} features\n"
                       "  likely cause: w includes the intercept; return its first d entries as w "
                       "and the last as b")
    Xd, yd = X.double(), y.double().reshape(-1, 1)
    no_icpt = torch.linalg.lstsq(Xd, yd).solution
    likely = {"no intercept: add a column of ones to X (b is part of the solution)":
              lambda: no_icpt.to(X.dtype)}
    expect_tensor(w_hat, w_ref, what=f"w of {what}", likely=likely, atol=atol, rtol=rtol,
                  inputs={"X": X, "y": y})
    b_likely = {"b taken as mean(y) while w was fitted without an intercept":
                lambda: yd.mean().reshape(1).to(X.dtype)}
    expect_tensor(b_hat, b_ref, what=f"b of {what}", likely=b_likely, atol=atol, rtol=rtol)


@CHAPTER.exercise("fit_normal_equation", points=2)
def check_fit_normal_equation(t, fit):
    X = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    y = torch.tensor([[1.0], [3.0], [5.0], [7.0]])
    with t.case("worked example: the points (0, 1), (1, 3), (2, 5), (3, 7) lie on y = 2x + 1"):
        _fit_case(t, fit, X, y, 1e-4, 1e-4)
    if not t.hidden:
        return
    for i, ((n, d), dtype, noise) in enumerate(itertools.product(
            ((50, 3), (200, 5), (8, 7)), DTYPES, (0.0, 0.3))):
        X = (randn(n, d, seed=i) + 2.0).to(dtype)  # not centred: the intercept matters
        w = randn(d, 1, seed=50 + i)
        y = (X.double() @ w - 1.5 + noise * randn(n, 1, seed=90 + i)).to(dtype)
        a = 1e-9 if dtype == torch.float64 else 2e-3
        with t.case(f"X ({n}, {d}), {dtype}, noise {noise}"):
            _fit_case(t, fit, X, y, atol=a * 10, rtol=a)


# --- max_stable_lr --------------------------------------------------------------------------


@CHAPTER.exercise("max_stable_lr", points=1)
def check_max_stable_lr(t, max_stable_lr_):
    def case(X, label):
        with t.case(label):
            got = t.call(max_stable_lr_, X, what=f"max_stable_lr(X {tuple(X.shape)})")
            ref = max_stable_lr(X)
            Xd = X.double()
            causes = {
                "the intercept column of ones is missing from X":
                    2 / torch.linalg.eigvalsh(Xd.T @ Xd / len(Xd)).max().item(),
                "X^T X is not divided by the number of examples":
                    2 / torch.linalg.eigvalsh(_design(Xd).T @ _design(Xd)).max().item(),
                "1 / lambda_max instead of 2 / lambda_max": ref / 2,
                "the singular value of A / sqrt(n) instead of its square (the eigenvalue)":
                    2 / torch.linalg.svdvals(_design(Xd) / math.sqrt(len(Xd))).max().item(),
            }
            cause = None
            if isinstance(got, int | float | torch.Tensor):
                g = float(got) if not isinstance(got, torch.Tensor) or got.numel() == 1 else None
                cause = next((c for c, v in causes.items()
                              if g is not None and abs(g - v) <= 1e-3 * abs(v)
                              and abs(v - ref) > 1e-3 * ref), None)
            expect_close(got, ref, what=f"max_stable_lr(X {tuple(X.shape)})", atol=0,
                         rtol=1e-3, inputs={"X": X}, cause=cause)

    case(torch.tensor([[0.0], [1.0], [2.0], [3.0]]), "worked example: X = [0, 1, 2, 3]")
    if not t.hidden:
        return
    for i, (n, d) in enumerate(((100, 2), (30, 5), (6, 6))):
        for dtype in DTYPES:
            case((randn(n, d, seed=i) * (i + 1) + i).to(dtype), f"X ({n}, {d}), {dtype}")


# --- train_linreg (D2L 3.4 exercise: zero initialisation) ----------------------------------


@CHAPTER.exercise("train_linreg", points=1)
def check_train_linreg(t, train_linreg):
    true_w = torch.tensor([2.0, -3.4])
    features, labels = synthetic_data(true_w, 4.2, 1000, 0.01, gen(0))
    with t.case("zero initialisation: num_epochs = 0 returns w = zeros (2, 1), b = zeros (1,)"):
        out = t.call(train_linreg, features, labels, 0.03, 0, 10, gen(1),
                     what="train_linreg(features, labels, lr=0.03, num_epochs=0, ...)")
        w, b = expect_pair(out, "train_linreg", "w", "b")
        expect_tensor(w, torch.zeros(2, 1), what="w before any training", check_dtype=False)
        expect_tensor(b, torch.zeros(1), what="b before any training", check_dtype=False)
    with t.case("3 epochs from zeros recover w = [2, -3.4], b = 4.2"):
        out = t.call(train_linreg, features, labels, 0.03, 3, 10, gen(1),
                     what="train_linreg(features, labels, lr=0.03, num_epochs=3, "
                          "batch_size=10, generator=g)",
                     forbidden_python=[OPTIM_DIR])
        w, b = expect_pair(out, "train_linreg", "w", "b")
        expect_tensor(torch.as_tensor(w).detach().reshape(2, 1), true_w.reshape(2, 1),
                      what="w after 3 epochs", atol=0.05, rtol=0, check_dtype=False)
        expect_tensor(torch.as_tensor(b).detach().reshape(1), torch.tensor([4.2]),
                      what="b after 3 epochs", atol=0.05, rtol=0, check_dtype=False)
    if not t.hidden:
        return
    with t.case("reproducible with the same generator seed"):
        a = t.call(train_linreg, features, labels, 0.03, 1, 10, gen(5))
        b_ = t.call(train_linreg, features, labels, 0.03, 1, 10, gen(5))
        if not torch.equal(torch.as_tensor(a[0]).detach(), torch.as_tensor(b_[0]).detach()):
            raise Mismatch("train_linreg gave different results for generators of the same "
                           "seed\n  likely cause: data_iter is not passed `generator`")
    with t.case("a large learning rate diverges, as expected from max_stable_lr"):
        lr = 2.5 * max_stable_lr(features)
        out = t.call(train_linreg, features, labels, lr, 1, 1000, gen(2),
                     what=f"train_linreg(features, labels, lr={lr:.3g}, num_epochs=1, "
                          "batch_size=1000)")
        w = torch.as_tensor(out[0]).detach()
        if torch.isfinite(w).all() and (w.reshape(-1) - true_w).abs().max() < 1:
            raise Mismatch("with full-batch steps at 2.5 times the largest stable learning rate "
                           "training should move away from the solution\n  likely cause: "
                           f"the update does not use lr (lr = {fmt_number(lr)}), or it is not "
                           "divided by batch_size")
