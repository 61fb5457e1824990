"""04_weight_decay: model selection, under/overfitting, weight decay (D2L 3.6-3.7), early
stopping (D2L 5.5).

Instructor only: the references, the tables of likely mistakes (`LIKELY`) and the hidden
checks. The visible checks (worked examples) and the judge helpers are public
(`grader.checks.weight_decay`); chapter 08 reuses the `k_fold_split` check for its
`get_k_fold_data` (same contract), references and likely mistakes included.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from grader.cases import DTYPES, gen, randn, tol
from grader.checks.weight_decay import (  # the public half: CHAPTER, visible checks, helpers
    CHAPTER,
    EVERY_PARAMETER_DECAYED,
    early_stopping_case,
    fold_case,
    frobenius_case,
    indexed,
    penalty_case,
    penalty_grad_case,
    poly_case,
    prior_case,
    wd_case,
    wd_grads,
)
from grader.probes.weight_decay import NETS, make_net

# --- references ---------------------------------------------------------------------------


def polynomial_features(x, degree):
    i = torch.arange(degree + 1, dtype=torch.float64)
    fact = torch.tensor([math.factorial(k) for k in range(degree + 1)], dtype=torch.float64)
    return (x.double().reshape(-1, 1) ** i / fact).to(x.dtype)


def k_fold_split(k, i, X, y):
    fold_size = X.shape[0] // k
    valid = slice(i * fold_size, (i + 1) * fold_size)
    train = [slice(j * fold_size, (j + 1) * fold_size) for j in range(k) if j != i]
    X_train = torch.cat([X[s] for s in train]) if train else X[:0]
    y_train = torch.cat([y[s] for s in train]) if train else y[:0]
    return X_train, y_train, X[valid], y[valid]


def l2_penalty(w):
    return (w ** 2).sum() / 2


def l1_penalty(w):
    return w.abs().sum()


def linear_weights(net):
    """The weights of every nn.Linear in `net`, however deeply nested."""
    return [m.weight for m in net.modules() if isinstance(m, nn.Linear)]


def weight_decay_sgd(net, lr, wd):
    decay = {id(w) for w in linear_weights(net)}
    params = list(net.parameters())
    return torch.optim.SGD([
        {"params": [p for p in params if id(p) in decay], "weight_decay": wd},
        {"params": [p for p in params if id(p) not in decay], "weight_decay": 0.0}], lr=lr)


def early_stopping(val_losses, patience, min_delta=0.0):
    """Keras' EarlyStopping rule: (stop_epoch, best_epoch), 0-based."""
    best, best_epoch, wait = val_losses[0], 0, 0
    for epoch in range(1, len(val_losses)):
        if val_losses[epoch] < best - min_delta:
            best, best_epoch, wait = val_losses[epoch], epoch, 0
        else:
            wait += 1
            if wait >= patience:
                return epoch, best_epoch
    return len(val_losses) - 1, best_epoch


def frobenius_sq(W):
    return torch.trace(W.T @ W)


def prior_to_weight_decay(sigma_w, sigma_noise, n):
    """The lambda for which mean_i (y_i - y_hat_i)^2 / 2 + lambda / 2 ||w||^2 is the negative
    log posterior (times sigma_noise^2 / n) under the prior w ~ N(0, sigma_w^2 I)."""
    return float(sigma_noise) ** 2 / (n * float(sigma_w) ** 2)


# --- derived references the visible checks ask for -------------------------------------------


def _frobenius_grad(W):
    return 2 * W


def _two_steps(net, opt, grads):
    """The parameters after opt.step() with zero gradients, then after one with `grads`."""
    out = {}
    for step, gs in (("zero", {n: torch.zeros_like(g) for n, g in grads.items()}),
                     ("known", grads)):
        for n, p in net.named_parameters():
            p.grad = gs[n].clone()
        opt.step()
        out[step] = {n: p.detach().clone() for n, p in net.named_parameters()}
    return out


def weight_decay_sgd_steps(kind, params, lr, wd, grads):
    net = make_net(kind, params)
    return _two_steps(net, weight_decay_sgd(net, lr, wd), grads)


def _every_decayed_steps(kind, params, lr, wd, grads):
    net = make_net(kind, params)
    return _two_steps(net, torch.optim.SGD(net.parameters(), lr=lr, weight_decay=wd), grads)


# --- likely mistakes: cause -> the buggy function, of the reference's arguments ---------------


def _poly_variants(x, degree):
    xd = x.double().reshape(-1, 1)
    fact = lambda ks: torch.tensor([math.factorial(int(k)) for k in ks], dtype=torch.float64)
    i = torch.arange(degree + 1, dtype=torch.float64)
    return {
        "the powers are not divided by i! (the factorial keeps x**i / i! of order 1 for large i)":
            lambda: (xd ** i).to(x.dtype),
        "each column divided by (i + 1)! instead of i!": lambda: (xd ** i / fact(i + 1)).to(x.dtype),
        "the columns start at x**1: column 0 should be x**0 / 0! = 1 (the bias term)":
            lambda: (xd ** i[1:] / fact(i[1:])).to(x.dtype),
        "only `degree` columns: the powers 0, 1, ..., degree make degree + 1 columns":
            lambda: (xd ** i[:-1] / fact(i[:-1])).to(x.dtype),
        "the result is transposed: one row per example, one column per power":
            lambda: (xd ** i / fact(i)).T.to(x.dtype),
        "the powers 1, ..., degree + 1 instead of 0, ..., degree":
            lambda: (xd ** (i + 1) / fact(i + 1)).to(x.dtype),
    }


def _fold_variants(k, i, X, y):
    n = X.shape[0]
    fs = n // k

    def rows(idx, T):
        return T[torch.as_tensor(idx, dtype=torch.long)] if len(idx) else T[:0]

    def split(train_idx, valid_idx):
        return rows(train_idx, X), rows(train_idx, y), rows(valid_idx, X), rows(valid_idx, y)

    folds = [list(range(j * fs, (j + 1) * fs)) for j in range(k)]
    used = list(range(k * fs))
    valid = folds[i]
    train = [r for j in range(k) if j != i for r in folds[j]]
    ceil_fs = -(-n // k)
    ceil_folds = [list(range(j * ceil_fs, min((j + 1) * ceil_fs, n))) for j in range(k)]
    nxt = folds[(i + 1) % k]

    def parts_in_wrong_order():
        Xt, yt, Xv, yv = split(train, valid)
        return Xt, Xv, yt, yv

    return {
        "the parts are returned as (X_train, X_valid, y_train, y_valid): return the four parts "
        "in the order (X_train, y_train, X_valid, y_valid)": parts_in_wrong_order,
        "the validation fold leaks into training: X_train should hold the other k - 1 folds "
        "only (a missing `continue`/`elif` after taking fold i?)":
            lambda: split(used, valid),
        "the validation fold leaks into training: X_train is all of X":
            lambda: split(list(range(n)), valid),
        "folds off by one: fold i is 0-based, so fold 0 is the first n // k examples":
            lambda: split([r for j in range(k) if j != (i + 1) % k for r in folds[j]], nxt),
        "folds off by one: fold i is 0-based (i - 1 was used)":
            lambda: split([r for j in range(k) if j != (i - 1) % k for r in folds[j]],
                          folds[(i - 1) % k]),
        "folds off by one: the slice end should be (i + 1) * fold_size, not one more":
            lambda: split([r for r in train if r != (i + 1) * fs], folds[i] + [(i + 1) * fs]),
        "the last n % k examples should be dropped, not added to the last fold":
            lambda: split(train + (list(range(k * fs, n)) if i != k - 1 else []),
                          valid + (list(range(k * fs, n)) if i == k - 1 else [])),
        "the last n % k examples should be dropped, not kept for training":
            lambda: split(train + list(range(k * fs, n)), valid),
        "the fold size should be n // k (rounded down), not rounded up":
            lambda: split([r for j in range(k) if j != i for r in ceil_folds[j]], ceil_folds[i]),
        "the training and validation parts are swapped: return (X_train, y_train, X_valid, "
        "y_valid)":
            lambda: split(valid, train),
        "the training folds are not in their original order (folds after i come first)":
            lambda: split([r for j in list(range(i + 1, k)) + list(range(i)) for r in folds[j]],
                          valid),
    }


def _table(variants, example) -> dict:
    """{cause: fn(*args)} for a function of the arguments that returns {cause: thunk}."""
    return {c: (lambda *a, c=c: variants(*a)[c]()) for c in variants(*example)}


def _es_loop(val_losses, patience, min_delta=0.0, *, improves=None, threshold=None,
             best_always=False, reset=True, last=None, ret=None):
    """The early-stopping loop with one thing changed (the keywords name the mistakes)."""
    improves = improves or (lambda loss, best, prev: loss < best - min_delta)
    threshold = patience if threshold is None else threshold
    best, best_epoch, wait, stop = val_losses[0], 0, 0, None
    for epoch in range(1, len(val_losses)):
        loss = val_losses[epoch]
        if improves(loss, best, val_losses[epoch - 1]):
            best, best_epoch = loss, epoch
            wait = 0 if reset else wait
        else:
            wait += 1
            best = min(best, loss) if best_always else best
            if wait >= threshold:
                stop = epoch
                break
    if stop is None:
        stop = len(val_losses) - 1 if last is None else last(val_losses)
    return ret(stop, best_epoch, val_losses) if ret else (stop, best_epoch)


def _lowest(losses):
    return min(range(len(losses)), key=lambda e: (losses[e], e))


LIKELY = {
    "polynomial_features": _table(_poly_variants, (torch.zeros(2), 2)),
    "k_fold_split": _table(_fold_variants, (2, 0, torch.zeros(4, 1), torch.zeros(4))),
    "l2_penalty": {
        "the sum of squares is not halved (the 1/2 makes its gradient w)":
            lambda w: (w ** 2).sum(),
        "a mean instead of a sum over the weights": lambda w: (w ** 2).mean() / 2,
        "the norm is not squared: ||w||^2 / 2 is the sum of squares, halved":
            lambda w: torch.sqrt((w ** 2).sum()) / 2,
        "abs() instead of the square: that is the L1 penalty": lambda w: w.abs().sum() / 2},
    "l1_penalty": {
        "abs() is missing: negative weights must add to the penalty too": lambda w: w.sum(),
        "the L1 penalty is not halved (sum(|w|), unlike L2's sum(w**2) / 2)":
            lambda w: w.abs().sum() / 2,
        "squares instead of absolute values: that is the L2 penalty": lambda w: (w ** 2).sum(),
        "a mean instead of a sum over the weights": lambda w: w.abs().mean()},
    "frobenius_sq": {
        "(W.T @ W).sum(), the sum of ALL entries of WᵀW: the squared norm is its trace, the sum "
        "of the diagonal (torch.trace), which is the sum of the squared entries of W":
            lambda W: (W.T @ W).sum(),
        "tr(W @ W): W is not transposed; ||W||_F^2 = tr(WᵀW), like ||w||^2 = wᵀw":
            lambda W: torch.trace(W @ W),
        "the norm, not its square: ||W||_F^2 = tr(WᵀW) has no square root":
            lambda W: torch.sqrt((W ** 2).sum()),
        "halved: that is the penalty ||W||^2 / 2, not the squared norm": lambda W: (W ** 2).sum() / 2,
        "the square of the sum of the entries, not the sum of their squares":
            lambda W: W.sum() ** 2,
        "only the diagonal of W is squared: tr(WᵀW) sums the squares of ALL entries":
            lambda W: (torch.diagonal(W) ** 2).sum()},
    "prior_to_weight_decay": {
        "1 / sigma_w^2 is the lambda of the loss sum_i (y_i - y_hat_i)^2 / (2 sigma_noise^2); "
        "the objective here is the MEAN of (y_i - y_hat_i)^2 / 2, that loss times sigma_noise^2 / "
        "n, so multiply by sigma_noise^2 / n": lambda s_w, s, n: 1.0 / s_w ** 2,
        "the number of examples n is missing: the loss is a mean over n examples, so the prior's "
        "weight is divided by n": lambda s_w, s, n: s ** 2 / s_w ** 2,
        "standard deviations instead of variances: lambda = sigma_noise^2 / (n sigma_w^2)":
            lambda s_w, s, n: s / (n * s_w),
        "inverted: a broader prior (larger sigma_w) means LESS weight decay, lambda = "
        "sigma_noise^2 / (n sigma_w^2)": lambda s_w, s, n: s_w ** 2 / (n * s ** 2),
        "multiplied by n instead of divided: the data term is a mean over n examples":
            lambda s_w, s, n: n * s ** 2 / s_w ** 2,
        "the ½ counted twice: -log N(w; 0, sigma_w^2) = ||w||^2 / (2 sigma_w^2) is already "
        "lambda / 2 ||w||^2 with lambda = 1 / sigma_w^2 (before the factor sigma_noise^2 / n)":
            lambda s_w, s, n: s ** 2 / (2 * n * s_w ** 2)},
    "weight_decay_sgd_steps": {EVERY_PARAMETER_DECAYED: _every_decayed_steps},
    "early_stopping": {
        "min_delta ignored: an epoch improves when its loss is below best - min_delta, not "
        "merely below best":
            lambda v, p, d=0.0: _es_loop(v, p, d, improves=lambda loss, best, prev: loss < best),
        "min_delta added the wrong way: an epoch improves when its loss is below best - "
        "min_delta, not best + min_delta":
            lambda v, p, d=0.0: _es_loop(v, p, d,
                                         improves=lambda loss, best, prev: loss < best + d),
        "improvement measured against the previous epoch's loss: compare with `best`, the loss "
        "of the last improving epoch":
            lambda v, p, d=0.0: _es_loop(v, p, d,
                                         improves=lambda loss, best, prev: loss < prev - d),
        "a loss equal to best - min_delta counts as an improvement: it must be strictly below":
            lambda v, p, d=0.0: _es_loop(v, p, d,
                                         improves=lambda loss, best, prev: loss <= best - d),
        "`best` updated on an epoch that did not improve: `best` is the loss of the last "
        "improving epoch (a smaller loss that is not below best - min_delta changes nothing)":
            lambda v, p, d=0.0: _es_loop(v, p, d, best_always=True),
        "patience off by one: training stops one epoch late (stop at the patience-th epoch in "
        "a row without improvement, not the (patience + 1)-th)":
            lambda v, p, d=0.0: _es_loop(v, p, d, threshold=p + 1),
        "patience off by one: training stops one epoch early (stop at the patience-th epoch in "
        "a row without improvement, not the (patience - 1)-th)":
            lambda v, p, d=0.0: _es_loop(v, p, d, threshold=p - 1),
        "the count of epochs without improvement is not reset to 0 when an epoch improves":
            lambda v, p, d=0.0: _es_loop(v, p, d, reset=False),
        "the best epoch returned as the stop epoch: return (stop_epoch, best_epoch), the epoch "
        "at which training stops first":
            lambda v, p, d=0.0: _es_loop(v, p, d, ret=lambda stop, best, losses: (best, best)),
        "(best_epoch, stop_epoch) returned: return (stop_epoch, best_epoch)":
            lambda v, p, d=0.0: _es_loop(v, p, d, ret=lambda stop, best, losses: (best, stop)),
        "without an early stop, stop_epoch is the last epoch, len(val_losses) - 1 (0-based), "
        "not len(val_losses)":
            lambda v, p, d=0.0: _es_loop(v, p, d, last=len),
        "best_epoch is the epoch of the lowest loss of all epochs: it is the last improving "
        "epoch up to stop_epoch":
            lambda v, p, d=0.0: _es_loop(v, p, d, ret=lambda stop, best, losses: (
                stop, _lowest(losses))),
    },
}


# --- hidden checks ----------------------------------------------------------------------------


@CHAPTER.hidden("polynomial_features")
def hidden_polynomial_features(t, fn):
    for i, ((n, degree), dtype) in enumerate(itertools.product(
            ((100, 20), (6, 5), (30, 1), (10, 0), (1, 4)), DTYPES)):
        x = randn(n, seed=i, dtype=dtype)
        with t.case(f"x of {n} standard normal values, degree {degree}, {dtype}"):
            poly_case(t, fn, x, degree, polynomial_features(x, degree),
                      t.likely("polynomial_features", x, degree), atol=1e-6, rtol=1e-5)
    with t.case("x in [-5, 5], degree 12: large powers, scaled by the factorial"):
        x = torch.linspace(-5, 5, 13, dtype=torch.float64)
        poly_case(t, fn, x, 12, polynomial_features(x, 12),
                  t.likely("polynomial_features", x, 12), atol=1e-8, rtol=1e-6)


@CHAPTER.hidden("k_fold_split")
def hidden_k_fold_split(t, fn):
    """Also the hidden check of 08's get_k_fold_data (same contract)."""
    for n, k, d, dtype in ((20, 5, 3, torch.float64), (23, 5, 2, torch.float32),
                           (10, 10, 4, torch.float64), (17, 3, 1, torch.float32)):
        X, y = indexed(n, d, dtype, n)
        for i in sorted({0, 1, k // 2, k - 1}):
            with t.case(f"{n} examples, k = {k}, fold {i}, {dtype}"):
                fold_case(t, fn, k, i, X, y, k_fold_split(k, i, X, y),
                          t.likely("k_fold_split", k, i, X, y))
    with t.case("labels of shape (n,) and features of shape (n, 2, 3)"):
        X, y = randn(14, 2, 3, seed=5), torch.arange(14)
        fold_case(t, fn, 3, 2, X, y, k_fold_split(3, 2, X, y),
                  t.likely("k_fold_split", 3, 2, X, y))


def _hidden_penalty(t, fn, name, ref):
    likely = LIKELY[name]
    for i, (shape, dtype) in enumerate(itertools.product(((5, 1), (7,), (4, 4), (3, 2, 2)),
                                                         DTYPES)):
        w = randn(*shape, seed=i, dtype=dtype)
        with t.case(f"w of shape {shape}, {dtype}"):
            penalty_case(t, fn, w, ref(w), likely, **tol(dtype, 10))
    with t.case("w of zeros, and w with large entries (1e3)"):
        penalty_case(t, fn, torch.zeros(3, 2), ref(torch.zeros(3, 2)), likely)
        w = randn(10, 1, seed=9, scale=1e3)
        penalty_case(t, fn, w, ref(w), likely, **tol(w.dtype, 1e6))
    with t.case("the penalty is differentiable: its gradient drives weight decay", weight=2):
        for dtype in DTYPES:
            w = randn(6, 3, seed=20, dtype=dtype)
            leaf = w.clone().requires_grad_()
            ref(leaf).backward()
            penalty_grad_case(t, fn, w, leaf.grad, f"{name}(w (6, 3) {str(dtype)[6:]})")


@CHAPTER.hidden("l2_penalty")
def hidden_l2_penalty(t, fn):
    _hidden_penalty(t, fn, "l2_penalty", l2_penalty)


@CHAPTER.hidden("l1_penalty")
def hidden_l1_penalty(t, fn):
    _hidden_penalty(t, fn, "l1_penalty", l1_penalty)


NET_LABELS = {
    "three_linear": "three nn.Linear layers in an nn.Sequential",
    "nested": "nested nn.Sequential modules",
    "two_layer_class": "a module class with lin1, lin2 and a parameter `scale` of its own",
    "batchnorm": "nn.Linear, nn.BatchNorm1d, nn.Linear (BatchNorm's parameters are not decayed)",
    "embedder": "an nn.Embedding and an nn.Linear (the embedding is not decayed)",
    "no_bias_float64": "an nn.Linear without bias, then one with bias, float64",
}
assert set(NET_LABELS) <= set(NETS)


def _net_params(kind, seed):
    """Every parameter of the net `kind` drawn from N(0.5, 1) (BatchNorm starts at weight 1,
    bias 0: make every value telling)."""
    return {n: randn(*p.shape, seed=seed + j, dtype=p.dtype) + 0.5
            for j, (n, p) in enumerate(make_net(kind).named_parameters())}


def _hidden_wd_case(t, fn, kind, seed, lr, wd, label):
    params = _net_params(kind, seed)
    grads = wd_grads(params, seed + 900)
    wd_case(t, fn, kind, params, lr, wd, grads, label,
            weight_decay_sgd_steps(kind, params, lr, wd, grads),
            t.likely("weight_decay_sgd_steps", kind, params, lr, wd, grads))


@CHAPTER.hidden("weight_decay_sgd")
def hidden_weight_decay_sgd(t, fn):
    for j, ((kind, label), (lr, wd)) in enumerate(zip(
            NET_LABELS.items(), itertools.cycle(((0.1, 0.5), (0.03, 3.0), (0.5, 0.01))))):
        with t.case(label, weight=2 if j < 2 else 1):
            _hidden_wd_case(t, fn, kind, 100 * j, lr, wd, label)
    with t.case("wd = 0: plain SGD for every parameter"):
        _hidden_wd_case(t, fn, "three_linear", 990, 0.2, 0.0, "three nn.Linear layers")


EARLY_STOPPING_CASES = (
    # (title, val_losses, patience, min_delta or None for the default)
    ("a plateau: an equal loss does not improve", [1.0, 0.8, 0.8, 0.8, 0.7, 0.6], 2, 0.0),
    ("the loss falls every epoch: no early stop", [1.0, 0.9, 0.8, 0.75, 0.7, 0.68], 2, 0.0),
    ("a single epoch", [0.5], 3, 0.0),
    ("patience 1: stop at the first epoch without improvement", [0.9, 0.6, 0.5, 0.55, 0.4],
     1, 0.0),
    ("improvements smaller than min_delta do not count",
     [1.0, 0.95, 0.92, 0.91, 0.85, 0.84, 0.83, 0.82, 0.7], 3, 0.1),
    ("a smaller loss that is not below best - min_delta leaves best unchanged",
     [1.0, 0.93, 0.88, 0.86, 0.85, 0.84], 4, 0.1),
    ("the wait starts again after an improvement",
     [1.0, 1.1, 1.2, 0.9, 1.0, 1.05, 0.95, 1.1, 1.2, 1.3], 3, 0.0),
    ("after a rise, a loss below the last one but not below best - min_delta does not improve",
     [1.0, 0.8, 0.78, 0.95, 0.74, 0.9, 0.9], 3, 0.05),
    ("the loss rises and falls: compare with the best loss, not the previous one",
     [0.5, 0.8, 0.7, 0.6, 0.55, 0.52, 0.51], 3, 0.0),
    ("the lowest loss comes after the stop", [0.8, 0.6, 0.65, 0.7, 0.66, 0.3], 3, 0.0),
    ("a loss exactly best - min_delta does not improve", [1.0, 0.75, 0.5, 0.5], 1, 0.25),
    ("min_delta left at its default (0.0)", [0.7, 0.6, 0.6, 0.59, 0.6, 0.6, 0.61], 3, None),
)


def _random_losses(seed):
    g = gen(seed)
    n = int(torch.randint(8, 41, (1,), generator=g))
    epochs = torch.arange(n, dtype=torch.float64)
    floor = 0.2 + 0.3 * torch.rand(1, generator=g, dtype=torch.float64)
    curve = floor + 1.0 / (1.0 + 0.4 * epochs) + 0.004 * torch.clamp(epochs - n / 2, min=0)
    noisy = curve + 0.03 * torch.randn(n, generator=g, dtype=torch.float64)
    patience = int(torch.randint(1, 6, (1,), generator=g))
    # losses of two decimals, min_delta of three: no loss is within 0.005 of best - min_delta,
    # so however a correct answer writes the comparison, rounding cannot change it
    min_delta = (0.0, 0.0, 0.005, 0.015)[int(torch.randint(0, 4, (1,), generator=g))]
    return [round(float(v), 2) for v in noisy], patience, min_delta


@CHAPTER.hidden("early_stopping")
def hidden_early_stopping(t, fn):
    for title, losses, patience, min_delta in EARLY_STOPPING_CASES:
        args = (losses, patience) + (() if min_delta is None else (min_delta,))
        with t.case(f"{title}, patience {patience}"):
            early_stopping_case(t, fn, losses, patience, min_delta, early_stopping(*args),
                                t.likely("early_stopping", *args))
    for i in range(12):
        losses, patience, min_delta = _random_losses(300 + i)
        with t.case(f"noisy validation curve of {len(losses)} epochs, patience {patience}, "
                    f"min_delta {min_delta}"):
            early_stopping_case(t, fn, losses, patience, min_delta,
                                early_stopping(losses, patience, min_delta),
                                t.likely("early_stopping", losses, patience, min_delta))


# --- frobenius_sq -------------------------------------------------------------------------------


@CHAPTER.hidden("frobenius_sq")
def hidden_frobenius_sq(t, fn):
    for i, (shape, dtype) in enumerate(itertools.product(((4, 4), (3, 7), (7, 3), (1, 5)),
                                                         DTYPES)):
        W = randn(*shape, seed=400 + i, dtype=dtype)
        with t.case(f"W of shape {shape}, {dtype}"):
            frobenius_case(t, fn, W, frobenius_sq(W), t.likely("frobenius_sq", W))
    with t.case("W of zeros, and W with large entries (1e3)"):
        W = torch.zeros(3, 2)
        frobenius_case(t, fn, W, frobenius_sq(W), t.likely("frobenius_sq", W))
        W = randn(6, 4, seed=410, scale=1e3)
        frobenius_case(t, fn, W, frobenius_sq(W), t.likely("frobenius_sq", W),
                       **tol(W.dtype, 1e7))
    with t.case("differentiable: the gradient of ||W||_F^2 is 2 W", weight=2):
        for dtype in DTYPES:
            W = randn(5, 3, seed=411, dtype=dtype)
            penalty_grad_case(t, fn, W, _frobenius_grad(W), f"frobenius_sq(W (5, 3) "
                              f"{str(dtype)[6:]})")


# --- prior_to_weight_decay ----------------------------------------------------------------------


@CHAPTER.hidden("prior_to_weight_decay")
def hidden_prior_to_weight_decay(t, fn):
    g = gen(420)
    cases = [(1.0, 1.0, 1), (0.1, 0.01, 1000), (3.0, 2.0, 7), (0.5, 0.5, 50)]
    for _ in range(3):
        s_w, s = (float(v) for v in 0.05 + 2 * torch.rand(2, generator=g, dtype=torch.float64))
        cases.append((round(s_w, 3), round(s, 3), int(torch.randint(2, 500, (1,), generator=g))))
    for s_w, s, n in cases:
        with t.case(f"sigma_w = {s_w}, sigma_noise = {s}, n = {n}"):
            prior_case(t, fn, s_w, s, n, prior_to_weight_decay(s_w, s, n),
                       t.likely("prior_to_weight_decay", s_w, s, n))
