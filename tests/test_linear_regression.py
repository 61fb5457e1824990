"""Chapter 01: references agree with torch and closed forms; the hidden checks accept correct
answers written differently and reject realistic buggy ones with specific feedback."""

import math

import torch
import torch.nn.functional as F

from grader.chapters import linear_regression as ref

CH = "01_linear_regression"


# --- references against torch built-ins and closed forms ---------------------------------------

def test_losses_match_torch():
    y_hat, y = torch.randn(50, 1, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    torch.testing.assert_close(ref.squared_loss(y_hat, y),
                               F.mse_loss(y_hat, y.reshape(-1, 1), reduction="none") / 2)
    for delta in (0.3, 1.0, 2.0):
        torch.testing.assert_close(ref.huber_loss(y_hat * 3, y, delta),
                                   F.huber_loss(y_hat * 3, y.reshape(-1, 1), reduction="none",
                                                delta=delta))
    sigma = 0.7
    torch.testing.assert_close(
        ref.gaussian_nll(y_hat, y, sigma),
        F.gaussian_nll_loss(y_hat, y.reshape(-1, 1), torch.full_like(y_hat, sigma ** 2),
                            full=True))


def test_normal_equation_matches_closed_form():
    X = torch.randn(40, 3, dtype=torch.float64) + 1
    y = X @ torch.tensor([[1.0], [2.0], [-1.0]], dtype=torch.float64) + 0.5
    w, b = ref.fit_normal_equation(X, y)
    A = torch.cat([X, torch.ones(40, 1, dtype=torch.float64)], 1)
    sol = torch.linalg.inv(A.T @ A) @ A.T @ y
    torch.testing.assert_close(torch.cat([w.reshape(-1), b]), sol.reshape(-1))


def test_max_stable_lr_separates_convergence_from_divergence():
    X = torch.randn(200, 2, dtype=torch.float64) * torch.tensor([1.0, 3.0]) + 1
    y = X @ torch.tensor([[1.0], [-2.0]], dtype=torch.float64) + 0.3
    lr_max = ref.max_stable_lr(X)

    def final_loss(lr):
        w, b = torch.zeros(2, 1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
        for _ in range(3000):
            r = X @ w + b - y
            w, b = w - lr * X.T @ r / len(X), b - lr * r.mean(0)
        return (r ** 2).mean().item()

    assert final_loss(0.95 * lr_max) < 1e-6
    assert not final_loss(1.05 * lr_max) < 1e3


# --- correct variants: written differently, must get full marks ---------------------------------

def synthetic_data_normal(w, b, num_examples, noise=0.01, generator=None):
    X = torch.normal(0.0, 1.0, (num_examples, len(w)), generator=generator, dtype=w.dtype)
    y = torch.matmul(X, w.reshape(-1, 1)) + b
    y += torch.normal(0.0, noise, y.shape, generator=generator, dtype=w.dtype)
    return X, y


def synthetic_data_rows(w, b, num_examples, noise=0.01, generator=None):
    X = torch.empty(num_examples, len(w), dtype=w.dtype).normal_(generator=generator)
    eps = torch.empty(num_examples, 1, dtype=w.dtype).normal_(generator=generator)
    return X, (X * w.reshape(1, -1)).sum(dim=1, keepdim=True) + b + noise * eps


def train_linreg_inline(features, labels, lr=0.03, num_epochs=3, batch_size=10, generator=None):
    w = torch.zeros(features.shape[1], 1, dtype=features.dtype, requires_grad=True)
    b = torch.zeros(1, dtype=features.dtype, requires_grad=True)
    for _ in range(num_epochs):
        order = torch.randperm(len(features), generator=generator)
        for idx in order.split(batch_size):
            loss = ((features[idx] @ w + b - labels[idx]) ** 2 / 2).sum()
            gw, gb = torch.autograd.grad(loss, [w, b])
            with torch.no_grad():
                w -= lr * gw / len(idx)
                b -= lr * gb / len(idx)
    return w.detach(), b.detach()


def data_iter_d2l(batch_size, features, labels, generator=None):
    num_examples = len(features)
    indices = torch.randperm(num_examples, generator=generator).tolist()
    for i in range(0, num_examples, batch_size):
        batch_indices = torch.tensor(indices[i: min(i + batch_size, num_examples)])
        yield features[batch_indices], labels[batch_indices]


def data_iter_argsort(batch_size, features, labels, generator=None):
    order = torch.argsort(torch.rand(len(features), generator=generator))
    return [(features[order[i:i + batch_size]], labels[order[i:i + batch_size]])
            for i in range(0, len(order), batch_size)]


def sgd_data(params, lr, batch_size):
    for p in params:
        p.data -= lr * p.grad / batch_size
        p.grad = None


def sgd_no_grad(params, lr, batch_size):
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size
            param.grad.zero_()


def nll_via_distribution(y_hat, y, sigma):
    dist = torch.distributions.Normal(y_hat, torch.as_tensor(sigma, dtype=y_hat.dtype))
    return -dist.log_prob(y.reshape(y_hat.shape)).mean()


def nll_math(y_hat, y, sigma):
    n = y_hat.numel()
    r = y.reshape(y_hat.shape) - y_hat
    return n * 0.5 * math.log(2 * math.pi * float(sigma) ** 2) / n + (r ** 2).sum() / (
        2 * float(sigma) ** 2) / n


def fit_solve(X, y):
    A = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], dim=1)
    sol = torch.linalg.solve(A.T @ A, A.T @ y)
    return sol[:-1], sol[-1]


def fit_centred(X, y):
    Xm, ym = X.mean(0, keepdim=True), y.mean(0, keepdim=True)
    Xc, yc = X - Xm, y - ym
    w = torch.linalg.pinv(Xc) @ yc
    return w, (ym - Xm @ w).reshape(1)


def huber_piecewise(y_hat, y, delta=1.0):
    r = (y_hat - y.reshape(y_hat.shape)).abs()
    quad = torch.clamp(r, max=delta)
    return 0.5 * quad ** 2 + delta * (r - quad)


def huber_mask(y_hat, y, delta=1.0):
    r = y_hat - y.reshape(y_hat.shape)
    small = (r.abs() <= delta).to(r.dtype)
    return small * 0.5 * r ** 2 + (1 - small) * delta * (r.abs() - 0.5 * delta)


def max_lr_svd(X):
    A = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)
    return 2 / (torch.linalg.svdvals(A).max() ** 2 / len(X))


def train_linreg_d2l(features, labels, lr=0.03, num_epochs=3, batch_size=10, generator=None):
    w = torch.zeros((features.shape[1], 1), requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    for _ in range(num_epochs):
        for X, y in data_iter_d2l(batch_size, features, labels, generator):
            ref.squared_loss(X @ w + b, y).sum().backward()
            sgd_no_grad([w, b], lr, batch_size)
    return w, b


CORRECT = [
    ("synthetic_data", ref.synthetic_data),
    ("synthetic_data", synthetic_data_normal),
    ("synthetic_data", synthetic_data_rows),
    ("data_iter", ref.data_iter),
    ("data_iter", data_iter_d2l),
    ("data_iter", data_iter_argsort),
    ("linreg", ref.linreg),
    ("linreg", lambda X, w, b: torch.matmul(X, w) + b),
    ("linreg", lambda X, w, b: torch.einsum("nd,do->no", X, w) + b),
    ("squared_loss", ref.squared_loss),
    ("squared_loss", lambda y_hat, y: 0.5 * (y_hat - y.view_as(y_hat)).pow(2)),
    ("sgd", ref.sgd),
    ("sgd", sgd_no_grad),
    ("sgd", sgd_data),
    ("gaussian_nll", ref.gaussian_nll),
    ("gaussian_nll", nll_via_distribution),
    ("gaussian_nll", nll_math),
    ("fit_normal_equation", ref.fit_normal_equation),
    ("fit_normal_equation", fit_solve),
    ("fit_normal_equation", fit_centred),
    ("huber_loss", ref.huber_loss),
    ("huber_loss", huber_piecewise),
    ("huber_loss", huber_mask),
    ("max_stable_lr", ref.max_stable_lr),
    ("max_stable_lr", max_lr_svd),
    ("train_linreg", ref.train_linreg),
    ("train_linreg", train_linreg_d2l),
    ("train_linreg", train_linreg_inline),
]


# --- buggy variants: must lose marks, with feedback naming the cause ---------------------------

def synth_global_rng(w, b, num_examples, noise=0.01, generator=None):
    X = torch.randn(num_examples, len(w), dtype=w.dtype)
    return X, (X @ w.reshape(-1, 1) + b + noise * torch.randn(num_examples, 1, dtype=w.dtype))


def synth_no_noise_scale(w, b, num_examples, noise=0.01, generator=None):
    X = torch.randn(num_examples, len(w), generator=generator, dtype=w.dtype)
    return X, X @ w.reshape(-1, 1) + b + torch.randn(num_examples, 1, generator=generator,
                                                     dtype=w.dtype)


def synth_flat_y(w, b, num_examples, noise=0.01, generator=None):
    X = torch.randn(num_examples, len(w), generator=generator, dtype=w.dtype)
    return X, X @ w.reshape(-1) + b + noise * torch.randn(num_examples, generator=generator,
                                                          dtype=w.dtype)


def synth_float32(w, b, num_examples, noise=0.01, generator=None):
    X = torch.randn(num_examples, len(w), generator=generator)
    y = X @ w.float().reshape(-1, 1) + b
    return X, y + noise * torch.randn(y.shape, generator=generator)


def synth_uniform(w, b, num_examples, noise=0.01, generator=None):
    X = torch.rand(num_examples, len(w), generator=generator, dtype=w.dtype) * 2 - 1
    y = X @ w.reshape(-1, 1) + b
    return X, y + noise * torch.randn(y.shape, generator=generator, dtype=w.dtype)


def data_iter_unshuffled(batch_size, features, labels, generator=None):
    for i in range(0, len(features), batch_size):
        yield features[i:i + batch_size], labels[i:i + batch_size]


def data_iter_with_replacement(batch_size, features, labels, generator=None):
    n = len(features)
    for _ in range(0, n, batch_size):
        idx = torch.randint(0, n, (batch_size,), generator=generator)
        yield features[idx], labels[idx]


def data_iter_drop_last(batch_size, features, labels, generator=None):
    idx = torch.randperm(len(features), generator=generator)
    for i in range(0, len(features) - batch_size + 1, batch_size):
        j = idx[i:i + batch_size]
        yield features[j], labels[j]


def data_iter_global_rng(batch_size, features, labels, generator=None):
    idx = torch.randperm(len(features))
    for i in range(0, len(features), batch_size):
        j = idx[i:i + batch_size]
        yield features[j], labels[j]


def data_iter_shuffle_batches(batch_size, features, labels, generator=None):
    starts = torch.randperm((len(features) + batch_size - 1) // batch_size, generator=generator)
    batches = [(features[s * batch_size:(s + 1) * batch_size], labels[s * batch_size:(s + 1) *
                                                                     batch_size]) for s in starts]
    last = max(range(len(batches)), key=lambda k: -len(batches[k][0]))
    batches.append(batches.pop(last))  # keep the short batch last
    yield from batches


def data_iter_misaligned(batch_size, features, labels, generator=None):
    i1 = torch.randperm(len(features), generator=generator)
    i2 = torch.randperm(len(features), generator=generator)
    for i in range(0, len(features), batch_size):
        yield features[i1[i:i + batch_size]], labels[i2[i:i + batch_size]]


def sgd_no_zero(params, lr, batch_size):
    with torch.no_grad():
        for p in params:
            p -= lr * p.grad / batch_size


def sgd_no_batch(params, lr, batch_size):
    with torch.no_grad():
        for p in params:
            p -= lr * p.grad
            p.grad.zero_()


def sgd_rebind(params, lr, batch_size):
    for p in params:
        p = p - lr * p.grad / batch_size  # noqa: PLW2901 - the bug
        p.grad = None


def sgd_no_nograd(params, lr, batch_size):
    for p in params:
        p -= lr * p.grad / batch_size
        p.grad.zero_()


def sgd_uphill(params, lr, batch_size):
    with torch.no_grad():
        for p in params:
            p += lr * p.grad / batch_size
            p.grad.zero_()


def sgd_d2l(params, lr, batch_size):
    from d2l import torch as d2l
    return d2l.sgd(params, lr, batch_size)


def linreg_d2l(X, w, b):
    from d2l import torch as d2l
    return d2l.linreg(X, w, b)


def nll_sum(y_hat, y, sigma):
    r = y.reshape(y_hat.shape) - y_hat
    return (0.5 * math.log(2 * math.pi * sigma ** 2) + r ** 2 / (2 * sigma ** 2)).sum()


def nll_no_half_log(y_hat, y, sigma):
    r = y.reshape(y_hat.shape) - y_hat
    return (math.log(2 * math.pi * sigma ** 2) + r ** 2 / (2 * sigma ** 2)).mean()


def nll_sigma_not_squared(y_hat, y, sigma):
    r = y.reshape(y_hat.shape) - y_hat
    return (0.5 * math.log(2 * math.pi * sigma ** 2) + r ** 2 / (2 * sigma)).mean()


def nll_no_reshape(y_hat, y, sigma):
    return (0.5 * math.log(2 * math.pi * sigma ** 2) + (y - y_hat) ** 2 / (2 * sigma ** 2)).mean()


def nll_no_two_pi(y_hat, y, sigma):
    r = y.reshape(y_hat.shape) - y_hat
    return (math.log(sigma) + r ** 2 / (2 * sigma ** 2)).mean()


def fit_no_intercept(X, y):
    w = torch.linalg.lstsq(X, y).solution
    return w, torch.zeros(1, dtype=X.dtype)


def fit_mean_intercept(X, y):
    w = torch.linalg.lstsq(X, y).solution
    return w, y.mean().reshape(1)


def fit_gradient_descent(X, y):
    w = torch.zeros(X.shape[1], 1, dtype=X.dtype, requires_grad=True)
    b = torch.zeros(1, dtype=X.dtype, requires_grad=True)
    opt = torch.optim.SGD([w, b], lr=0.05)
    for _ in range(2000):
        opt.zero_grad()
        ((X @ w + b - y) ** 2).mean().backward()
        opt.step()
    return w.detach(), b.detach()


def fit_stacked(X, y):
    A = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)
    return torch.linalg.lstsq(A, y).solution, None


def fit_b_scalar(X, y):
    w, b = fit_solve(X, y)
    return w, b.reshape(())


def huber_batch_switch(y_hat, y, delta=1.0):
    r = y_hat - y.reshape(y_hat.shape)
    if (r.abs() <= delta).all():
        return 0.5 * r ** 2
    return delta * (r.abs() - delta / 2)


def huber_wrong_constant(y_hat, y, delta=1.0):
    r = y_hat - y.reshape(y_hat.shape)
    return torch.where(r.abs() <= delta, 0.5 * r ** 2, delta * r.abs() - delta ** 2)


def huber_ignores_delta(y_hat, y, delta=1.0):
    r = y_hat - y.reshape(y_hat.shape)
    return torch.where(r.abs() <= 1, 0.5 * r ** 2, r.abs() - 0.5)


def huber_no_half(y_hat, y, delta=1.0):
    r = y_hat - y.reshape(y_hat.shape)
    return torch.where(r.abs() <= delta, r ** 2, delta * (r.abs() - delta / 2))


def max_lr_no_intercept(X):
    return 2 / torch.linalg.eigvalsh(X.T @ X / len(X)).max().item()


def max_lr_no_n(X):
    A = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)
    return 2 / torch.linalg.eigvalsh(A.T @ A).max().item()


def max_lr_one_over(X):
    A = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)
    return 1 / torch.linalg.eigvalsh(A.T @ A / len(X)).max().item()


def train_random_init(features, labels, lr=0.03, num_epochs=3, batch_size=10, generator=None):
    w = torch.normal(0, 0.01, (features.shape[1], 1), requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    for _ in range(num_epochs):
        for X, y in data_iter_d2l(batch_size, features, labels, generator):
            ref.squared_loss(X @ w + b, y).sum().backward()
            sgd_no_grad([w, b], lr, batch_size)
    return w, b


def train_global_shuffle(features, labels, lr=0.03, num_epochs=3, batch_size=10, generator=None):
    w = torch.zeros((features.shape[1], 1), requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    for _ in range(num_epochs):
        for X, y in data_iter_d2l(batch_size, features, labels):
            ref.squared_loss(X @ w + b, y).sum().backward()
            sgd_no_grad([w, b], lr, batch_size)
    return w, b


BUGGY = [
    ("synthetic_data", synth_global_rng, "generator"),
    ("synthetic_data", synth_no_noise_scale, "standard deviation of the noise"),
    ("synthetic_data", synth_flat_y, "reshaped"),
    ("synthetic_data", synth_float32, "dtype"),
    ("synthetic_data", synth_uniform, "variance of X"),
    ("data_iter", data_iter_unshuffled, "original order"),
    ("data_iter", data_iter_with_replacement, "exactly once"),
    ("data_iter", data_iter_drop_last, "batch sizes"),
    ("data_iter", data_iter_global_rng, "generator"),
    ("data_iter", data_iter_shuffle_batches, "consecutive examples stay together"),
    ("data_iter", data_iter_misaligned, "do not belong"),
    ("linreg", lambda X, w, b: X @ w, "bias b is not added"),
    ("linreg", lambda X, w, b: (X * w.T).sum(1) + b, "shape"),
    ("linreg", lambda X, w, b: X @ w.T + b, "transposed"),
    ("linreg", linreg_d2l, "d2l"),
    ("squared_loss", lambda y_hat, y: (y_hat - y.reshape(y_hat.shape)) ** 2, "not halved"),
    ("squared_loss", lambda y_hat, y: (y_hat - y) ** 2 / 2, "broadcast"),
    ("squared_loss", lambda y_hat, y: ((y_hat - y.reshape(y_hat.shape)) ** 2 / 2).mean(),
     "reduction"),
    ("squared_loss", lambda y_hat, y: (y_hat - y.reshape(y_hat.shape)).abs() / 2, "abs()"),
    ("sgd", sgd_no_zero, "not reset"),
    ("sgd", sgd_no_batch, "not divided by batch_size"),
    ("sgd", sgd_rebind, "did not change"),
    ("sgd", sgd_no_nograd, "no_grad"),
    ("sgd", sgd_uphill, "uphill"),
    ("sgd", sgd_d2l, "d2l"),
    ("gaussian_nll", nll_sum, "sum over examples"),
    ("gaussian_nll", nll_no_half_log, "log term is not halved"),
    ("gaussian_nll", nll_sigma_not_squared, "2 sigma instead"),
    ("gaussian_nll", nll_no_reshape, "broadcast"),
    ("gaussian_nll", nll_no_two_pi, "constant"),
    ("fit_normal_equation", fit_no_intercept, "no intercept"),
    ("fit_normal_equation", fit_mean_intercept, "mean(y)"),
    ("fit_normal_equation", fit_gradient_descent, "from scratch"),
    ("fit_normal_equation", fit_stacked, "includes the intercept"),
    ("fit_normal_equation", fit_b_scalar, "shape"),
    ("huber_loss", huber_batch_switch, "one switch for the whole batch"),
    ("huber_loss", huber_wrong_constant, "delta*|r| - delta**2"),
    ("huber_loss", huber_ignores_delta, "delta is ignored"),
    ("huber_loss", huber_no_half, "quadratic part is not halved"),
    ("max_stable_lr", max_lr_no_intercept, "intercept"),
    ("max_stable_lr", max_lr_no_n, "not divided by the number of examples"),
    ("max_stable_lr", max_lr_one_over, "1 / lambda_max"),
    ("train_linreg", train_random_init, "zero"),
    ("train_linreg", train_global_shuffle, "generator"),
]


# --- the exercises from D2L 3.1 and 3.5 ---------------------------------------------------------

def test_new_references_match_closed_forms_and_torch():
    x = torch.tensor([3.0, -1.0, 10.0, 2.0], dtype=torch.float64)
    b_sq, b_abs = ref.best_constants(x)
    assert abs(float(b_sq) - 3.5) < 1e-12 and -1 <= 2 <= float(b_abs) + 1 <= 4
    X = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]], dtype=torch.float64)
    torch.testing.assert_close(ref.fit_min_norm(X, 2 * X[:, :1]),
                               torch.ones(2, 1, dtype=torch.float64))
    rate = torch.tensor([0.5, 2.0, 4.0], dtype=torch.float64)
    k = torch.tensor([0.0, 3.0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(ref.poisson_nll(rate, k),
                               F.poisson_nll_loss(rate, k, log_input=False, full=False, eps=0)
                               + torch.lgamma(k + 1).mean())
    torch.testing.assert_close(ref.poisson_nll_log(torch.log(rate), k), ref.poisson_nll(rate, k))
    torch.testing.assert_close(ref._poisson_nll_log_no_const(torch.log(rate), k),
                               F.poisson_nll_loss(torch.log(rate), k, log_input=True))
    y_hat, y = torch.randn(9, 1, dtype=torch.float64), torch.randn(9, dtype=torch.float64)
    lap = torch.distributions.Laplace(y_hat, torch.tensor(0.7, dtype=torch.float64))
    torch.testing.assert_close(ref.laplace_nll(y_hat, y, 0.7),
                               -lap.log_prob(y.reshape(-1, 1)).mean())
    assert ref.lr_for_mean_loss(0.001, 32) == 0.032


def best_constants_sort(x):
    s = x.sort().values
    n = len(s)
    mid = (s[(n - 1) // 2] + s[n // 2]) / 2
    return float(s.sum() / n), float(mid)


def best_constants_quantile(x):
    return x.double().mean().item(), torch.quantile(x.double(), 0.5).item()


def min_norm_lstsq(X, y):
    return torch.linalg.lstsq(X, y.reshape(-1, 1), driver="gelsd").solution


def min_norm_svd(X, y):
    U, S, Vh = torch.linalg.svd(X, full_matrices=False)
    keep = S > S.max() * max(X.shape) * torch.finfo(X.dtype).eps
    coef = (U.T @ y.reshape(-1, 1))[keep] / S[keep].reshape(-1, 1)
    return Vh[keep].T @ coef


def min_norm_tiny_ridge(X, y):
    Xd = X.double()
    lam = 1e-10 * float((Xd.T @ Xd).diagonal().max())
    A = Xd.T @ Xd + lam * torch.eye(X.shape[1], dtype=torch.float64)
    return torch.linalg.solve(A, Xd.T @ y.double().reshape(-1, 1)).to(X.dtype)


def estimation_errors_inline(sizes, w, b, noise=0.01, generator=None):
    out = torch.zeros(len(sizes), 2, dtype=w.dtype)
    for i, n in enumerate(sizes):
        X = torch.randn(n, len(w), generator=generator, dtype=w.dtype)
        y = X @ w.reshape(-1, 1) + b + noise * torch.randn(n, 1, generator=generator,
                                                           dtype=w.dtype)
        A = torch.cat([X, torch.ones(n, 1, dtype=w.dtype)], 1)
        theta = torch.linalg.pinv(A) @ y
        out[i, 0] = torch.linalg.vector_norm(theta[:-1, 0] - w.reshape(-1))
        out[i, 1] = (theta[-1, 0] - b).abs()
    return out


def laplace_distribution(y_hat, y, scale=1.0):
    d = torch.distributions.Laplace(y_hat, torch.as_tensor(scale, dtype=y_hat.dtype))
    return -d.log_prob(y.reshape(y_hat.shape)).mean()


def laplace_math(y_hat, y, scale=1.0):
    r = (y.reshape(y_hat.shape) - y_hat).abs()
    return math.log(2) + torch.log(torch.as_tensor(scale, dtype=y_hat.dtype)) + (r / scale).mean()


def poisson_torch(rate, k):
    return F.poisson_nll_loss(rate, k, log_input=False, full=False, eps=0.0)


def poisson_xlogy(rate, k):
    return (rate - torch.xlogy(k, rate) + torch.lgamma(k + 1)).mean()


def poisson_log_torch(log_rate, k):
    return F.poisson_nll_loss(log_rate, k, log_input=True)


def poisson_log_distribution(log_rate, k):
    return -torch.distributions.Poisson(torch.exp(log_rate)).log_prob(k).mean()


CORRECT += [
    ("best_constants", ref.best_constants),
    ("best_constants", best_constants_sort),
    ("best_constants", best_constants_quantile),
    ("fit_min_norm", ref.fit_min_norm),
    ("fit_min_norm", lambda X, y: torch.linalg.pinv(X) @ y.reshape(-1, 1)),
    ("fit_min_norm", min_norm_lstsq),
    ("fit_min_norm", min_norm_svd),
    ("fit_min_norm", min_norm_tiny_ridge),
    ("estimation_errors", ref.estimation_errors),
    ("estimation_errors", estimation_errors_inline),
    ("lr_for_mean_loss", ref.lr_for_mean_loss),
    ("lr_for_mean_loss", lambda lr, batch_size: float(lr) * int(batch_size)),
    ("laplace_nll", ref.laplace_nll),
    ("laplace_nll", laplace_distribution),
    ("laplace_nll", laplace_math),
    ("poisson_nll", ref.poisson_nll),
    ("poisson_nll", poisson_torch),
    ("poisson_nll", poisson_xlogy),
    ("poisson_nll_log", ref.poisson_nll_log),
    ("poisson_nll_log", poisson_log_torch),
    ("poisson_nll_log", poisson_log_distribution),
]


def min_norm_solve(X, y):
    return torch.linalg.solve(X.T @ X, X.T @ y.reshape(-1, 1))


def min_norm_ridge_one(X, y):
    A = X.T @ X + torch.eye(X.shape[1], dtype=X.dtype)
    return torch.linalg.solve(A, X.T @ y.reshape(-1, 1))


def min_norm_drop_columns(X, y):
    """A least-squares solution on a maximal set of independent columns: not minimum-norm."""
    keep, w = [], torch.zeros(X.shape[1], 1, dtype=X.dtype)
    for j in range(X.shape[1]):
        if torch.linalg.matrix_rank(X[:, keep + [j]]) == len(keep) + 1:
            keep.append(j)
    w[keep] = torch.linalg.lstsq(X[:, keep], y.reshape(-1, 1)).solution
    return w


def errors_one_data_set(sizes, w, b, noise=0.01, generator=None):
    """One data set of the largest size for every row: the errors do not depend on n."""
    X, y = ref.synthetic_data(w, b, max(sizes), noise, generator)
    w_hat, b_hat = ref.fit_normal_equation(X, y)
    row = torch.stack([(w_hat.reshape(-1) - w).norm(), (b_hat.reshape(()) - b).abs()])
    return row.repeat(len(sizes), 1)


def errors_squared(sizes, w, b, noise=0.01, generator=None):
    return ref.estimation_errors(sizes, w, b, noise, generator) ** 2


def errors_signed(sizes, w, b, noise=0.01, generator=None):
    out = []
    for n in sizes:
        X, y = ref.synthetic_data(w, b, n, noise, generator)
        w_hat, b_hat = ref.fit_normal_equation(X, y)
        out.append(torch.stack([(w_hat.reshape(-1) - w).norm(), b_hat.reshape(()) - b]))
    return torch.stack(out)


def errors_default_noise(sizes, w, b, noise=0.01, generator=None):
    return ref.estimation_errors(sizes, w, b, 0.01, generator)


BUGGY += [
    ("best_constants", lambda x: (x.mean(), x.mean()), "sum |x - b| is smallest at a median"),
    ("best_constants", lambda x: (x.median(), x.median()), "the median for both"),
    ("best_constants", lambda x: (x.median(), x.mean()), "swapped"),
    ("best_constants", lambda x: ((x.min() + x.max()) / 2,) * 2, "midrange"),
    ("fit_min_norm", min_norm_solve, "singular"),
    ("fit_min_norm", min_norm_ridge_one, "ridge penalty lam = 1"),
    ("fit_min_norm", min_norm_drop_columns, "null space"),
    ("fit_min_norm", lambda X, y: torch.linalg.pinv(X) @ y, "shape"),
    ("fit_min_norm", lambda X, y: torch.linalg.inv(X.T @ X) @ X.T @ y.reshape(-1, 1), "singular"),
    ("estimation_errors", errors_one_data_set, "shrink like noise / sqrt(n)"),
    ("estimation_errors", errors_squared, "shrink like noise / sqrt(n)"),
    ("estimation_errors", errors_signed, "signed difference"),
    ("estimation_errors", errors_default_noise, "shrink like noise / sqrt(n)"),
    ("lr_for_mean_loss", lambda lr, bs: lr / bs, "divided by batch_size"),
    ("lr_for_mean_loss", lambda lr, bs: lr, "unchanged"),
    ("lr_for_mean_loss", lambda lr, bs: lr * math.sqrt(bs), "sqrt(batch_size)"),
    ("laplace_nll", lambda yh, y, scale=1.0: (math.log(2 * scale) + (y.reshape(yh.shape) - yh)
                                              ** 2 / scale).mean(), "squared residual"),
    ("laplace_nll", lambda yh, y, scale=1.0: ((y.reshape(yh.shape) - yh).abs() / scale).mean(),
     "log term is missing"),
    ("laplace_nll", lambda yh, y, scale=1.0: (math.log(2 * scale) + (y.reshape(yh.shape) - yh)
                                              .abs()).mean(), "not divided by scale"),
    ("laplace_nll", lambda yh, y, scale=1.0: (math.log(2 * scale) + (y - yh).abs() / scale
                                              ).mean(), "broadcast"),
    ("poisson_nll", lambda r, k: (k * torch.log(r) - r).mean(), "sign is flipped"),
    ("poisson_nll", lambda r, k: (r - torch.log(r)).mean(), "not multiplied by k"),
    ("poisson_nll", lambda r, k: (r - k * torch.log(r) + torch.lgamma(k)).mean(), "lgamma(k + 1)"),
    ("poisson_nll", lambda r, k: (r - k * torch.log(r)).sum(), "sum over examples"),
    ("poisson_nll_log", lambda e, k: (k * e - torch.exp(e)).mean(), "sign is flipped"),
    ("poisson_nll_log", lambda e, k: (e - k * e).mean(), "used as the rate"),
    ("poisson_nll_log", lambda e, k: (torch.exp(e) - k * torch.exp(e)).mean(),
     "k exp(log_rate)"),
    ("poisson_nll_log", lambda e, k: (torch.exp(e) - k * e).sum(), "sum over examples"),
]
