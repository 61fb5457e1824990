"""01_linear_regression: linear regression and maximum likelihood (D2L 3.1-3.5).

Instructor only: the references, the likely mistakes (`LIKELY`) and the hidden check of each
exercise; the visible checks are public (`grader.checks.linear_regression`).
"""

from __future__ import annotations

import itertools
import math

import torch

from grader.cases import DTYPES, expect_stat, gen, randn, tol
from grader.checks.linear_regression import (
    CHAPTER,
    TRUE_W,
    best_constants_case,
    errors_stats,
    fit_case,
    lr_case,
    max_lr_case,
    min_norm_case,
    nll_case,
    one_pass,
    sgd_case,
    sgd_inputs,
    synthetic_stats,
    train_data,
)
from grader.feedback import Mismatch, expect_pair, expect_tensor, fmt_number

# --- references ---------------------------------------------------------------------------


def synthetic_data(w, b, num_examples, noise=0.01, generator=None):
    X = torch.randn(num_examples, len(w), generator=generator, dtype=w.dtype)
    y = X @ w.reshape(-1) + b + noise * torch.randn(num_examples, generator=generator,
                                                    dtype=w.dtype)
    return X, y.reshape(-1, 1)


def synthetic_data_seeded(w, b, num_examples, noise, seed):
    """synthetic_data from a generator of `seed` (the data train_linreg is checked on)."""
    return synthetic_data(w, b, num_examples, noise, gen(seed))


def data_iter(batch_size, features, labels, generator=None):
    n = len(features)
    indices = torch.randperm(n, generator=generator)
    for i in range(0, n, batch_size):
        j = indices[i:i + batch_size]
        yield features[j], labels[j]


def linreg(X, w, b):
    return X @ w + b


def squared_loss(y_hat, y):
    return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2


def sgd(params, lr, batch_size):
    with torch.no_grad():
        for p in params:
            p -= lr * p.grad / batch_size
            p.grad.zero_()


def _sgd_trajectory(params, grads, lr, batch_size, update):
    """Per step k, `update(p, g)` for the parameters p before step k of the reference steps."""
    out, before = [], [p.detach().clone() for p in params]
    for step_grads in grads:
        out.append([update(p, g) for p, g in zip(before, step_grads)])
        before = [p - lr * g / batch_size for p, g in zip(before, step_grads)]
    return out


def _sgd_steps(params, grads, lr, batch_size):
    """The parameters after each step of sgd (before step k, p.grad is grads[k])."""
    return _sgd_trajectory(params, grads, lr, batch_size, lambda p, g: p - lr * g / batch_size)


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


def train_linreg(features, labels, lr=0.03, num_epochs=3, batch_size=10, generator=None):
    w = torch.zeros(features.shape[1], 1, dtype=features.dtype, requires_grad=True)
    b = torch.zeros(1, dtype=features.dtype, requires_grad=True)
    for _ in range(num_epochs):
        for X, y in data_iter(batch_size, features, labels, generator):
            squared_loss(linreg(X, w, b), y).sum().backward()
            sgd([w, b], lr, batch_size)
    return w.detach(), b.detach()


# --- references of the exercises from D2L 3.1 and 3.5 ------------------------------------------


def best_constants(x):
    return x.mean(), x.median()


def _best_constants_targets(x):
    """The mean (minimiser of sum (x - b)^2) and min_b sum |x - b| (at a median), in float64."""
    xd = x.double()
    return float(xd.mean()), float((xd - xd.median()).abs().sum())


def fit_min_norm(X, y):
    w = torch.linalg.pinv(X.double(), rtol=1e-10) @ y.double().reshape(-1, 1)
    return w.to(X.dtype)


def estimation_errors(sizes, w, b, noise=0.01, generator=None):
    rows = []
    for n in sizes:
        X, y = synthetic_data(w, b, n, noise, generator)
        w_hat, b_hat = fit_normal_equation(X, y)
        rows.append(torch.stack([(w_hat.reshape(-1) - w.reshape(-1)).norm(),
                                 (b_hat.reshape(()) - b).abs()]))
    return torch.stack(rows)


def lr_for_mean_loss(lr_sum, batch_size):
    return lr_sum * batch_size


def _as64(v):
    return torch.as_tensor(v, dtype=torch.float64)


def laplace_nll(y_hat, y, scale=1.0):
    r = (y.reshape(y_hat.shape) - y_hat).double()
    return (torch.log(2 * _as64(scale)) + r.abs() / _as64(scale)).mean().to(y_hat.dtype)


def _poisson_nll_no_const(rate, k):
    r, kd = rate.double(), k.double()
    return (r - kd * torch.log(r)).mean().to(rate.dtype)


def poisson_nll(rate, k):
    r, kd = rate.double(), k.double()
    return (r - kd * torch.log(r) + torch.lgamma(kd + 1)).mean().to(rate.dtype)


def _poisson_nll_log_no_const(log_rate, k):
    e, kd = log_rate.double(), k.double()
    return (torch.exp(e) - kd * e).mean().to(log_rate.dtype)


def poisson_nll_log(log_rate, k):
    e, kd = log_rate.double(), k.double()
    return (torch.exp(e) - kd * e + torch.lgamma(kd + 1)).mean().to(log_rate.dtype)


# --- likely mistakes: cause -> the buggy function, of the same arguments as the reference ------


def _huber_r(yh, y):
    return yh - y.reshape(yh.shape)


def _nll_r(yh, y):
    return y.reshape(yh.shape) - yh


def _half_log(sigma):
    return 0.5 * math.log(2 * math.pi * float(sigma) ** 2)


def _fit_no_intercept(X, y):
    return torch.linalg.lstsq(X.double(), y.double().reshape(-1, 1)).solution.to(X.dtype)


def _lam_max(M):
    return torch.linalg.eigvalsh(M).max().item()


def _lap_r(yh, y):
    return (y.reshape(yh.shape) - yh).double()


def _ridge(X, y, lam):
    Xd = X.double()
    A = Xd.T @ Xd + lam * torch.eye(X.shape[1], dtype=torch.float64)
    return torch.linalg.solve(A, Xd.T @ y.double().reshape(-1, 1)).to(X.dtype)


LIKELY = {
    "best_constants": {  # cause -> (b for the squared loss, b for the absolute loss)
        "the mean for both: the mean minimises sum (x - b)^2, but sum |x - b| is smallest at "
        "a median": lambda x: (float(x.double().mean()), float(x.double().mean())),
        "the median for both: a median minimises sum |x - b|, but sum (x - b)^2 is smallest at "
        "the mean": lambda x: (float(x.double().median()), float(x.double().median())),
        "the two are swapped: the mean is for the squared loss, a median for the absolute loss":
            lambda x: (float(x.double().median()), float(x.double().mean())),
        "the midrange (min + max) / 2: it minimises the largest |x - b|, not the sum":
            lambda x: (float((x.double().min() + x.double().max()) / 2),
                       float((x.double().min() + x.double().max()) / 2)),
    },
    "fit_min_norm": {
        "a ridge penalty lam = 1 shrinks w: (X^T X + lam I)^-1 X^T y is the minimum-norm "
        "solution only in the limit lam -> 0 (or use torch.linalg.pinv(X) @ y)":
            lambda X, y: _ridge(X, y, 1.0),
        "a ridge penalty lam = 0.1 shrinks w: (X^T X + lam I)^-1 X^T y is the minimum-norm "
        "solution only in the limit lam -> 0 (or use torch.linalg.pinv(X) @ y)":
            lambda X, y: _ridge(X, y, 0.1),
    },
    "lr_for_mean_loss": {
        "divided by batch_size: the mean loss has batch_size times smaller gradients, so it "
        "needs a batch_size times larger learning rate for the same step":
            lambda lr, bs: lr / bs,
        "unchanged: the gradient of the mean is the gradient of the sum divided by batch_size, "
        "so the same learning rate takes batch_size times smaller steps": lambda lr, bs: lr,
        "scaled by sqrt(batch_size): the gradient scales by batch_size exactly":
            lambda lr, bs: lr * math.sqrt(bs),
    },
    "laplace_nll": {
        "a squared residual: the Laplace likelihood has |y - y_hat| (squares belong to the "
        "Gaussian)": lambda yh, y, scale=1.0: (torch.log(2 * _as64(scale))
                                               + _lap_r(yh, y) ** 2 / _as64(scale)).mean(),
        "the log term is missing: -log p(e) = log(2 scale) + |e| / scale":
            lambda yh, y, scale=1.0: (_lap_r(yh, y).abs() / _as64(scale)).mean(),
        "the constant log 2 is missing (log(scale) alone)":
            lambda yh, y, scale=1.0: (torch.log(_as64(scale))
                                      + _lap_r(yh, y).abs() / _as64(scale)).mean(),
        "|y - y_hat| is not divided by scale":
            lambda yh, y, scale=1.0: (torch.log(2 * _as64(scale)) + _lap_r(yh, y).abs()).mean(),
        "a sum over examples instead of the mean":
            lambda yh, y, scale=1.0: (torch.log(2 * _as64(scale))
                                      + _lap_r(yh, y).abs() / _as64(scale)).sum(),
        "y is not reshaped like y_hat, so (n, 1) and (n,) broadcast to (n, n)":
            lambda yh, y, scale=1.0: (torch.log(2 * _as64(scale))
                                      + (y.double() - yh.double()).abs() / _as64(scale)).mean(),
    },
    "poisson_nll": {
        "the sign is flipped: the negative log-likelihood is rate - k log(rate) (+ log k!)":
            lambda r, k: -_poisson_nll_no_const(r, k).double(),
        "the sign is flipped: the negative log-likelihood is rate - k log(rate) + log k!":
            lambda r, k: -poisson_nll(r, k).double(),
        "log(rate) is not multiplied by k: log p(k | rate) = k log(rate) - rate - log k!":
            lambda r, k: (r.double() - torch.log(r.double())).mean(),
        "lgamma(k) is log((k - 1)!): log k! is lgamma(k + 1)":
            lambda r, k: (r.double() - k.double() * torch.log(r.double())
                          + torch.lgamma(k.double())).mean(),
        "a sum over examples instead of the mean":
            lambda r, k: (r.double() - k.double() * torch.log(r.double())).sum(),
    },
    "poisson_nll_log": {
        "the sign is flipped: the negative log-likelihood is exp(log_rate) - k log_rate "
        "(+ log k!)": lambda e, k: -_poisson_nll_log_no_const(e, k).double(),
        "log_rate is used as the rate: the rate is exp(log_rate), and log(rate) is log_rate":
            lambda e, k: (e.double() - k.double() * e.double()).mean(),
        "k exp(log_rate) instead of k log_rate: log(rate) is log_rate itself":
            lambda e, k: (torch.exp(e.double()) - k.double() * torch.exp(e.double())).mean(),
        "a sum over examples instead of the mean":
            lambda e, k: (torch.exp(e.double()) - k.double() * e.double()).sum(),
    },
    "linreg": {"the bias b is not added": lambda X, w, b: X @ w,
               "the bias is subtracted": lambda X, w, b: X @ w - b,
               "w is transposed (X @ w.T)": lambda X, w, b: X @ w.T + b},
    "squared_loss": {
        "the square is not halved": lambda yh, y: (yh - y.reshape(yh.shape)) ** 2,
        "abs() instead of a square": lambda yh, y: (yh - y.reshape(yh.shape)).abs() / 2,
    },
    "huber_loss": {
        "one switch for the whole batch (the condition must be elementwise: torch.where)":
            lambda yh, y, delta=1.0: (
                0.5 * _huber_r(yh, y) ** 2 if bool((_huber_r(yh, y).abs() <= delta).all())
                else delta * (_huber_r(yh, y).abs() - delta / 2)),
        "the linear part is delta*|r| - delta**2 (it should be delta*(|r| - delta/2))":
            lambda yh, y, delta=1.0: torch.where(_huber_r(yh, y).abs() <= delta,
                                                 0.5 * _huber_r(yh, y) ** 2,
                                                 delta * _huber_r(yh, y).abs() - delta ** 2),
        "the quadratic part is not halved":
            lambda yh, y, delta=1.0: torch.where(_huber_r(yh, y).abs() <= delta,
                                                 _huber_r(yh, y) ** 2,
                                                 delta * (_huber_r(yh, y).abs() - delta / 2)),
        "delta is ignored (always 1)": lambda yh, y, delta=1.0: huber_loss(yh, y, 1.0),
        "the linear part is |r| - delta/2 (not multiplied by delta)":
            lambda yh, y, delta=1.0: torch.where(_huber_r(yh, y).abs() <= delta,
                                                 0.5 * _huber_r(yh, y) ** 2,
                                                 _huber_r(yh, y).abs() - delta / 2),
    },
    "_sgd_steps": {
        "the parameters did not change: `p = p - ...` makes a new tensor; update in place with "
        "`p -= ...`": lambda params, grads, lr, bs: _sgd_trajectory(
            params, grads, lr, bs, lambda p, g: p.clone()),
        "the gradient is not divided by batch_size": lambda params, grads, lr, bs:
            _sgd_trajectory(params, grads, lr, bs, lambda p, g: p - lr * g),
        "the update goes uphill (+ instead of -)": lambda params, grads, lr, bs:
            _sgd_trajectory(params, grads, lr, bs, lambda p, g: p + lr * g / bs),
    },
    "gaussian_nll": {
        "a sum over examples instead of the mean":
            lambda yh, y, sigma: (_half_log(sigma)
                                  + _nll_r(yh, y) ** 2 / (2 * float(sigma) ** 2)).sum(),
        "the log term is not halved: log(2 pi sigma^2) instead of 0.5 * log(2 pi sigma^2)":
            lambda yh, y, sigma: (2 * _half_log(sigma)
                                  + _nll_r(yh, y) ** 2 / (2 * float(sigma) ** 2)).mean(),
        "divided by 2 sigma instead of 2 sigma**2":
            lambda yh, y, sigma: (_half_log(sigma)
                                  + _nll_r(yh, y) ** 2 / (2 * float(sigma))).mean(),
        "the log term is missing":
            lambda yh, y, sigma: (_nll_r(yh, y) ** 2 / (2 * float(sigma) ** 2)).mean(),
        "the constant 0.5 * log(2 pi) is missing (log(sigma) alone)":
            lambda yh, y, sigma: (math.log(float(sigma))
                                  + _nll_r(yh, y) ** 2 / (2 * float(sigma) ** 2)).mean(),
        "y is not reshaped like y_hat, so (n, 1) and (n,) broadcast to (n, n)":
            lambda yh, y, sigma: (_half_log(sigma)
                                  + (y - yh) ** 2 / (2 * float(sigma) ** 2)).mean(),
    },
    "fit_normal_equation": {  # cause -> (w, b) that mistake returns; None: either
        "w fitted without an intercept and b taken as mean(y): add a column of ones to X "
        "(b is part of the solution)": lambda X, y: (_fit_no_intercept(X, y),
                                                     y.double().mean().reshape(1).to(X.dtype)),
        "no intercept: add a column of ones to X (b is part of the solution)":
            lambda X, y: (_fit_no_intercept(X, y), None),
    },
    "max_stable_lr": {
        "the intercept column of ones is missing from X":
            lambda X: 2 / _lam_max(X.double().T @ X.double() / len(X)),
        "X^T X is not divided by the number of examples":
            lambda X: 2 / _lam_max(_design(X.double()).T @ _design(X.double())),
        "1 / lambda_max instead of 2 / lambda_max": lambda X: max_stable_lr(X) / 2,
        "the singular value of A / sqrt(n) instead of its square (the eigenvalue)":
            lambda X: 2 / torch.linalg.svdvals(_design(X.double()) / math.sqrt(len(X))
                                               ).max().item(),
    },
}


# --- hidden checks ---------------------------------------------------------------------------


@CHAPTER.hidden("synthetic_data")
def hidden_synthetic_data(t, synthetic_data_):
    w32 = torch.tensor([2.0, -3.4])
    w64 = torch.tensor([0.5, 1.0, -2.0], dtype=torch.float64)
    synthetic_stats(t, synthetic_data_, w64, -1.5, 20000, 0.5, 1, "float64 w of 3, noise 0.5")
    synthetic_stats(t, synthetic_data_, w32.reshape(2, 1), 3.0, 5000, 0.2, 2, "w of shape (2, 1)")
    synthetic_stats(t, synthetic_data_, torch.tensor([1.5]), 0.0, 3000, 0.0, 3, "noise = 0")
    with t.case("default noise and no generator"):
        out = t.call(synthetic_data_, w32, 4.2, 10, what="synthetic_data(w, b, 10)")
        X, y = expect_pair(out, "synthetic_data", "X", "y")
        if not isinstance(X, torch.Tensor) or X.shape != (10, 2):
            raise Mismatch("synthetic_data(w, b, 10) should return X of shape (10, 2)")
        expect_tensor(y, linreg(X, w32.reshape(-1, 1), 4.2), what="y for the default noise 0.01",
                      atol=0.1, rtol=0)


@CHAPTER.hidden("data_iter")
def hidden_data_iter(t, data_iter_):
    for n, bs in ((100, 10), (101, 7), (5, 8), (64, 64)):
        with t.case(f"{n} examples in batches of {bs}"):
            one_pass(t, data_iter_, n, bs, 10 + n, dtype=torch.float64)
    with t.case("the permutation is uniform (statistical)", weight=2):
        n, passes = 20, 400
        first = torch.zeros(n)
        adjacent = 0
        for s in range(passes):
            order = one_pass(t, data_iter_, n, 5, 1000 + s)
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


SHAPES = ((5, 3), (4, 4), (1, 6), (64, 1))


@CHAPTER.hidden("linreg")
def hidden_linreg(t, linreg_):
    likely = LIKELY["linreg"]
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


@CHAPTER.hidden("squared_loss")
def hidden_squared_loss(t, squared_loss_):
    likely = LIKELY["squared_loss"]
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


@CHAPTER.hidden("huber_loss")
def hidden_huber_loss(t, huber_loss_):
    likely = LIKELY["huber_loss"]
    for i, (delta, dtype) in enumerate(itertools.product((0.5, 1.0, 2.0, 3.7), DTYPES)):
        r = torch.linspace(-3 * delta, 3 * delta, 25, dtype=torch.float64)
        r = torch.cat([r, torch.tensor([delta, -delta], dtype=torch.float64)])
        y = randn(r.numel(), seed=i, dtype=torch.float64)
        y_hat = (y + r).reshape(-1, 1)
        y_hat, y = y_hat.to(dtype), y.to(dtype)
        ref = huber_loss(y_hat.double(), y.double(), delta).to(dtype)
        with t.case(f"delta = {delta}, {dtype}, residuals in [-3 delta, 3 delta]"):
            t.expect(huber_loss_, dict(y_hat=y_hat, y=y, delta=delta), ref, likely=likely,
                     **tol(dtype, 10 * delta))
    with t.case("all residuals small (quadratic regime), y of shape (n, 1)"):
        y_hat, y = randn(6, 1, seed=30) * 0.1, randn(6, 1, seed=31) * 0.1
        t.expect(huber_loss_, dict(y_hat=y_hat, y=y, delta=1.0), huber_loss(y_hat, y),
                 likely=likely, **tol(torch.float64))


@CHAPTER.hidden("sgd")
def hidden_sgd(t, sgd_):
    for i, (shapes, dtype, lr, bs) in enumerate((
            ([(3, 1), (1,)], torch.float64, 0.03, 10),
            ([(4, 1), (4, 4), (1,)], torch.float32, 0.5, 1),
            ([(5, 1), (1,)], torch.float64, 1.0, 7),
            ([(1, 1), (1,)], torch.float32, 0.001, 64))):
        params, grads = sgd_inputs(shapes, dtype, 10 * (i + 1), bs)
        with t.case(f"{len(shapes)} parameters, {dtype}, lr {lr}, batch_size {bs}"):
            sgd_case(t, sgd_, params, grads, lr, bs)


@CHAPTER.hidden("gaussian_nll")
def hidden_gaussian_nll(t, gaussian_nll_):
    likely = LIKELY["gaussian_nll"]
    for i, (n, sigma, dtype) in enumerate(itertools.product((1, 10, 200), (0.1, 1.0, 3.0),
                                                            DTYPES)):
        y_hat, y = randn(n, 1, seed=i, dtype=dtype), randn(n, seed=40 + i, dtype=dtype)
        with t.case(f"n = {n}, sigma = {sigma}, {dtype}"):
            t.expect(gaussian_nll_, dict(y_hat=y_hat, y=y, sigma=sigma),
                     gaussian_nll(y_hat, y, sigma), likely=likely,
                     **tol(dtype, 1 / sigma ** 2 * 10))
    with t.case("sigma as a 0-d tensor, y of shape (n, 1)"):
        y_hat, y = randn(5, 1, seed=70), randn(5, 1, seed=71)
        sigma = torch.tensor(0.7, dtype=torch.float64)
        t.expect(gaussian_nll_, dict(y_hat=y_hat, y=y, sigma=sigma),
                 gaussian_nll(y_hat, y, sigma), likely=likely)


@CHAPTER.hidden("fit_normal_equation")
def hidden_fit_normal_equation(t, fit):
    for i, ((n, d), dtype, noise) in enumerate(itertools.product(
            ((50, 3), (200, 5), (8, 7)), DTYPES, (0.0, 0.3))):
        X = (randn(n, d, seed=i) + 2.0).to(dtype)  # not centred: the intercept matters
        w = randn(d, 1, seed=50 + i)
        y = (X.double() @ w - 1.5 + noise * randn(n, 1, seed=90 + i)).to(dtype)
        a = 1e-9 if dtype == torch.float64 else 2e-3
        with t.case(f"X ({n}, {d}), {dtype}, noise {noise}"):
            fit_case(t, fit, X, y, atol=a * 10, rtol=a)


@CHAPTER.hidden("max_stable_lr")
def hidden_max_stable_lr(t, max_stable_lr_):
    for i, (n, d) in enumerate(((100, 2), (30, 5), (6, 6))):
        for dtype in DTYPES:
            max_lr_case(t, max_stable_lr_, (randn(n, d, seed=i) * (i + 1) + i).to(dtype),
                        f"X ({n}, {d}), {dtype}")


@CHAPTER.hidden("train_linreg")
def hidden_train_linreg(t, train_linreg_):
    features, labels = train_data(t)
    with t.case("reproducible with the same generator seed"):
        a = t.call(train_linreg_, features, labels, 0.03, 1, 10, gen(5))
        b_ = t.call(train_linreg_, features, labels, 0.03, 1, 10, gen(5))
        wa, _ = expect_pair(a, "train_linreg", "w", "b")
        wb, _ = expect_pair(b_, "train_linreg", "w", "b")
        if not isinstance(wa, torch.Tensor) or not isinstance(wb, torch.Tensor):
            raise Mismatch("train_linreg should return w as a torch.Tensor")
        if not torch.equal(wa.detach(), wb.detach()):
            raise Mismatch("train_linreg gave different results for generators of the same "
                           "seed\n  likely cause: data_iter is not passed `generator`")
    with t.case("a large learning rate diverges, as expected from max_stable_lr"):
        lr = 2.5 * max_stable_lr(features)
        out = t.call(train_linreg_, features, labels, lr, 1, 1000, gen(2),
                     what=f"train_linreg(features, labels, lr={lr:.3g}, num_epochs=1, "
                          "batch_size=1000)")
        w, _ = expect_pair(out, "train_linreg", "w", "b")
        if not isinstance(w, torch.Tensor) or w.numel() != 2:
            raise Mismatch("train_linreg should return w as a torch.Tensor of shape (2, 1)")
        w = w.detach().double()
        if torch.isfinite(w).all() and (w.reshape(-1) - TRUE_W.double()).abs().max() < 1:
            raise Mismatch("with full-batch steps at 2.5 times the largest stable learning rate "
                           "training should move away from the solution\n  likely cause: "
                           f"the update does not use lr (lr = {fmt_number(lr)}), or it is not "
                           "divided by batch_size")


@CHAPTER.hidden("best_constants")
def hidden_best_constants(t, best_constants_):
    for i, (n, dtype) in enumerate(itertools.product((1, 2, 7, 50, 200), DTYPES)):
        x = (torch.empty(n, dtype=torch.float64).exponential_(generator=gen(i)) * 3 - 1)
        best_constants_case(t, best_constants_, x.to(dtype),
                            f"{n} skewed values, {dtype}" + (" (even n: any point between the "
                                                             "two middle values is a median)"
                                                             if n % 2 == 0 else ""))
    best_constants_case(t, best_constants_, torch.tensor([5.0, -2.0, 5.0, 5.0, 1e3, -7.5]),
                        "ties and an outlier")


@CHAPTER.hidden("fit_min_norm")
def hidden_fit_min_norm(t, fit_min_norm_):
    for i, dtype in enumerate(DTYPES):
        X = randn(30, 3, seed=10 + i, dtype=dtype)
        X = torch.cat([X, 2 * X[:, :1], X[:, 1:2]], 1)  # exactly dependent columns
        y = randn(30, 1, seed=20 + i, dtype=dtype)
        min_norm_case(t, fit_min_norm_, X, y, f"X (30, 5) of rank 3, {dtype}, y not in its "
                      "column space")
        Xw = randn(4, 9, seed=30 + i, dtype=dtype)
        yw = randn(4, 1, seed=40 + i, dtype=dtype)
        min_norm_case(t, fit_min_norm_, Xw, yw, f"more features than examples: X (4, 9), {dtype}")
    Xz = torch.cat([randn(12, 2, seed=50, dtype=torch.float64),
                    torch.zeros(12, 1, dtype=torch.float64)], 1)
    min_norm_case(t, fit_min_norm_, Xz, randn(12, 1, seed=51, dtype=torch.float64),
                  "a column of zeros, float64")
    U, V = randn(40, 2, seed=60, dtype=torch.float64), randn(2, 6, seed=61, dtype=torch.float64)
    min_norm_case(t, fit_min_norm_, U @ V, randn(40, 1, seed=62, dtype=torch.float64),
                  "X (40, 6) of rank 2, float64")
    Xd = randn(20, 2, seed=65, dtype=torch.float64)
    min_norm_case(t, fit_min_norm_, torch.cat([Xd, Xd], 1),
                  randn(20, seed=66, dtype=torch.float64), "y of shape (n,): w is still (d, 1)")
    Xf = randn(25, 4, seed=70, dtype=torch.float64)
    min_norm_case(t, fit_min_norm_, Xf, Xf @ randn(4, 1, seed=71, dtype=torch.float64),
                  "full rank: the ordinary least-squares solution")


@CHAPTER.hidden("estimation_errors")
def hidden_estimation_errors(t, fn):
    w = torch.tensor([1.0, -0.5, 2.0])
    errors_stats(t, fn, [30, 1000], w, -1.0, 1.0, range(500, 600),
                 "float32 w of 3, noise 1 (100 data sets of 30 and 1000 examples)")


@CHAPTER.hidden("lr_for_mean_loss")
def hidden_lr_for_mean_loss(t, fn):
    for lr, bs in ((0.03, 10), (0.5, 1), (1e-4, 256), (2.0, 7)):
        with t.case(f"lr {lr}, batch_size {bs}"):
            lr_case(t, fn, lr, bs)


@CHAPTER.hidden("laplace_nll")
def hidden_laplace_nll(t, fn):
    for i, (n, scale, dtype) in enumerate(itertools.product((1, 10, 200), (0.5, 1.0, 3.0),
                                                            DTYPES)):
        y_hat, y = randn(n, 1, seed=i, dtype=dtype), randn(n, seed=40 + i, dtype=dtype)
        with t.case(f"n = {n}, scale = {scale}, {dtype}"):
            nll_case(t, fn, "laplace_nll", (y_hat, y, scale), ("y_hat", "y", "scale"))
    with t.case("scale as a 0-d tensor, y of shape (n, 1)"):
        y_hat, y = randn(5, 1, seed=70), randn(5, 1, seed=71)
        nll_case(t, fn, "laplace_nll", (y_hat, y, torch.tensor(0.7)), ("y_hat", "y", "scale"))


def _poisson_inputs(n, seed, dtype, log_scale=1.0):
    log_rate = randn(n, seed=seed, dtype=torch.float64) * log_scale
    k = torch.poisson(torch.exp(log_rate), generator=gen(seed + 1))
    return log_rate.to(dtype), k.to(dtype)


@CHAPTER.hidden("poisson_nll")
def hidden_poisson_nll(t, fn):
    for i, (n, s, dtype) in enumerate(itertools.product((1, 20, 300), (0.5, 2.0), DTYPES)):
        log_rate, k = _poisson_inputs(n, 10 * i, dtype, s)
        with t.case(f"n = {n}, rates exp(N(0, {s}^2)), {dtype}"):
            nll_case(t, fn, "poisson_nll", (torch.exp(log_rate), k), ("rate", "k"),
                     ("_poisson_nll_no_const",), tols=tol(dtype, 100))


@CHAPTER.hidden("poisson_nll_log")
def hidden_poisson_nll_log(t, fn):
    for i, (n, s, dtype) in enumerate(itertools.product((1, 20, 300), (0.5, 2.0), DTYPES)):
        log_rate, k = _poisson_inputs(n, 10 * i + 5, dtype, s)
        with t.case(f"n = {n}, log_rate ~ N(0, {s}^2), {dtype}"):
            nll_case(t, fn, "poisson_nll_log", (log_rate, k), ("log_rate", "k"),
                     ("_poisson_nll_log_no_const",), tols=tol(dtype, 100))
