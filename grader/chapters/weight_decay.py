"""04_weight_decay: model selection, under/overfitting, weight decay (D2L 3.6-3.7).

Reference implementations first, then one check per exercise. A check's first cases are the
visible ones (a worked example, fast); the rest run only when grading (`t.hidden`).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from grader.cases import DTYPES, randn, tol
from grader.feedback import Mismatch, expect_tensor, fmt_number, fmt_value, type_name
from grader.registry import Chapter

CHAPTER = Chapter("04_weight_decay", "Model selection, under/overfitting, weight decay")

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


# --- shared pieces of the checks ---------------------------------------------------------


def _same(a, b) -> bool:
    return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
            and torch.allclose(a.detach().double(), b.detach().double(), rtol=1e-5, atol=1e-7))


def _named_variant(got, expected, variants: dict):
    """The first buggy variant whose output equals `got` (shapes included) but not `expected`."""
    for cause, make in variants.items():
        try:
            alt = make()
        except Exception:  # a variant that does not run on this input
            continue
        if _same(got, alt) and not _same(alt, expected):
            return cause
    return None


def _compare(got, expected, what, inputs, variants, **tolerance):
    """expect_tensor, but a buggy variant is named even when the shapes differ."""
    cause = _named_variant(got, expected, variants) if isinstance(got, torch.Tensor) else None
    if cause and not _same(got, expected):
        head = ("returned wrong values" if got.shape == expected.shape else
                f"returned shape {tuple(got.shape)}, expected {tuple(expected.shape)}")
        raise Mismatch(f"{what} {head}.\n  expected: {fmt_value(expected)}\n  received: "
                       f"{fmt_value(got)}\n  likely cause: {cause}")
    expect_tensor(got, expected, what=what, inputs=inputs, **tolerance)


# --- polynomial_features ------------------------------------------------------------------


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


def _poly_case(t, fn, x, degree, **tolerance):
    what = f"polynomial_features(x {tuple(x.shape)} {str(x.dtype)[6:]}, degree={degree})"
    got = t.call(fn, x, degree, what=what)
    _compare(got, polynomial_features(x, degree), what, {"x": x, "degree": degree},
             _poly_variants(x, degree), **(tolerance or {"atol": 1e-6, "rtol": 1e-5}))


@CHAPTER.exercise("polynomial_features", points=2)
def check_polynomial_features(t, fn):
    with t.case("worked example: x = [0, 1, 2, -1], degree 3"):
        _poly_case(t, fn, torch.tensor([0.0, 1.0, 2.0, -1.0]), 3)
    if not t.hidden:
        return
    for i, ((n, degree), dtype) in enumerate(itertools.product(
            ((100, 20), (6, 5), (30, 1), (10, 0), (1, 4)), DTYPES)):
        x = randn(n, seed=i, dtype=dtype)
        with t.case(f"x of {n} standard normal values, degree {degree}, {dtype}"):
            _poly_case(t, fn, x, degree, atol=1e-6, rtol=1e-5)
    with t.case("x in [-5, 5], degree 12: large powers, scaled by the factorial"):
        _poly_case(t, fn, torch.linspace(-5, 5, 13, dtype=torch.float64), 12, atol=1e-8,
                   rtol=1e-6)


# --- k_fold_split -------------------------------------------------------------------------


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
    return {
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


def _fold_case(t, fn, k, i, X, y):
    what = f"{t.name}({k}, {i}, X {tuple(X.shape)}, y {tuple(y.shape)})"  # also 08's get_k_fold_data
    out = t.call(fn, k, i, X, y, what=what)
    names = ("X_train", "y_train", "X_valid", "y_valid")
    if not isinstance(out, tuple | list) or len(out) != 4:
        raise Mismatch(f"{what} should return a tuple (X_train, y_train, X_valid, y_valid), but "
                       f"returned {type_name(out)}"
                       + (f" of length {len(out)}" if isinstance(out, tuple | list) else ""))
    expected = k_fold_split(k, i, X, y)
    swapped = (expected[0], expected[2], expected[1], expected[3])
    if all(_same(g, e) for g, e in zip(out, swapped)) and not _same(out[1], expected[1]):
        raise Mismatch(f"{what} returned (X_train, X_valid, y_train, y_valid)\n  likely cause: "
                       "return the four parts in the order (X_train, y_train, X_valid, y_valid)")
    variants = _fold_variants(k, i, X, y)
    for j, name in enumerate(names):
        per_part = {c: (lambda f=f, j=j: f()[j]) for c, f in variants.items()}
        _compare(out[j], expected[j], f"{name} of {what}", None, per_part, atol=0, rtol=0)


def _indexed(n, d, dtype, seed):
    """Rows that show where they came from: column 0 is the row index."""
    X = torch.cat([torch.arange(n, dtype=dtype).reshape(-1, 1),
                   randn(n, d - 1, seed=seed, dtype=dtype)], dim=1)
    return X, (100 + torch.arange(n, dtype=dtype)).reshape(-1, 1)


@CHAPTER.exercise("k_fold_split", points=2, d2l=("get_k_fold_data",))
def check_k_fold_split(t, fn):
    X, y = _indexed(12, 2, torch.float32, 0)
    with t.case("worked example: 12 examples, k = 4, fold i = 1 is validation"):
        _fold_case(t, fn, 4, 1, X, y)
    if not t.hidden:
        return
    for n, k, d, dtype in ((20, 5, 3, torch.float64), (23, 5, 2, torch.float32),
                           (10, 10, 4, torch.float64), (17, 3, 1, torch.float32)):
        X, y = _indexed(n, d, dtype, n)
        for i in sorted({0, 1, k // 2, k - 1}):
            with t.case(f"{n} examples, k = {k}, fold {i}, {dtype}"):
                _fold_case(t, fn, k, i, X, y)
    with t.case("labels of shape (n,) and features of shape (n, 2, 3)"):
        X = randn(14, 2, 3, seed=5)
        _fold_case(t, fn, 3, 2, X, torch.arange(14))


# --- l2_penalty, l1_penalty -----------------------------------------------------------------


def _penalty_grad(t, fn, w, expected_grad, what):
    w = w.clone().requires_grad_()
    out = t.call(fn, w, what=what)
    if not isinstance(out, torch.Tensor) or out.grad_fn is None:
        raise Mismatch(f"{what} is not differentiable with respect to w (its result has no "
                       "grad_fn), so it cannot be added to the loss and trained\n  likely "
                       "cause: the penalty was computed outside autograd (.item(), float(), "
                       "NumPy, .detach() or torch.no_grad())")
    if out.numel() != 1:
        raise Mismatch(f"{what} should be a scalar, but has shape {tuple(out.shape)}")
    out.sum().backward()
    expect_tensor(w.grad, expected_grad, what=f"the gradient of {what} with respect to w",
                  **tol(w.dtype, 10))


def _penalty_check(t, fn, ref, grad, likely, name):
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    with t.case(f"worked example: w = {w.tolist()}"):
        t.expect(fn, dict(w=w), ref(w), likely=likely)
    if not t.hidden:
        return
    for i, (shape, dtype) in enumerate(itertools.product(((5, 1), (7,), (4, 4), (3, 2, 2)),
                                                         DTYPES)):
        w = randn(*shape, seed=i, dtype=dtype)
        with t.case(f"w of shape {shape}, {dtype}"):
            t.expect(fn, dict(w=w), ref(w), likely=likely, **tol(dtype, 10))
    with t.case("w of zeros, and w with large entries (1e3)"):
        t.expect(fn, dict(w=torch.zeros(3, 2)), ref(torch.zeros(3, 2)), likely=likely)
        w = randn(10, 1, seed=9, scale=1e3)
        t.expect(fn, dict(w=w), ref(w), likely=likely, **tol(w.dtype, 1e6))
    with t.case("the penalty is differentiable: its gradient drives weight decay", weight=2):
        for dtype in DTYPES:
            w = randn(6, 3, seed=20, dtype=dtype)
            _penalty_grad(t, fn, w, grad(w), f"{name}(w (6, 3) {str(dtype)[6:]})")


@CHAPTER.exercise("l2_penalty", points=1, d2l=("l2_penalty",))
def check_l2_penalty(t, fn):
    likely = {"the sum of squares is not halved (the 1/2 makes its gradient w)":
              lambda w: (w ** 2).sum(),
              "a mean instead of a sum over the weights": lambda w: (w ** 2).mean() / 2,
              "the norm is not squared: ||w||^2 / 2 is the sum of squares, halved":
              lambda w: torch.sqrt((w ** 2).sum()) / 2,
              "abs() instead of the square: that is the L1 penalty": lambda w: w.abs().sum() / 2}
    _penalty_check(t, fn, l2_penalty, lambda w: w, likely, "l2_penalty")


@CHAPTER.exercise("l1_penalty", points=1)
def check_l1_penalty(t, fn):
    likely = {"abs() is missing: negative weights must add to the penalty too":
              lambda w: w.sum(),
              "the L1 penalty is not halved (sum(|w|), unlike L2's sum(w**2) / 2)":
              lambda w: w.abs().sum() / 2,
              "squares instead of absolute values: that is the L2 penalty":
              lambda w: (w ** 2).sum(),
              "a mean instead of a sum over the weights": lambda w: w.abs().mean()}
    _penalty_check(t, fn, l1_penalty, torch.sign, likely, "l1_penalty")


# --- weight_decay_sgd -----------------------------------------------------------------------


class _TwoLayer(nn.Module):
    """An MLP written as a class, with a parameter that belongs to no nn.Linear."""

    def __init__(self):
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(3, 6), nn.Linear(6, 2)
        self.scale = nn.Parameter(torch.ones(2))

    def forward(self, X):
        return self.lin2(torch.relu(self.lin1(X))) * self.scale


class _Embedder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding, self.head = nn.Embedding(10, 4), nn.Linear(4, 3)

    def forward(self, idx):
        return self.head(self.embedding(idx))


NETS = {
    "three nn.Linear layers in an nn.Sequential":
        lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                              nn.Linear(8, 3)),
    "nested nn.Sequential modules":
        lambda: nn.Sequential(nn.Sequential(nn.Linear(3, 5), nn.ReLU()),
                              nn.Sequential(nn.Linear(5, 5), nn.Tanh(),
                                            nn.Sequential(nn.Linear(5, 2)))),
    "a module class with lin1, lin2 and a parameter `scale` of its own": _TwoLayer,
    "nn.Linear, nn.BatchNorm1d, nn.Linear (BatchNorm's parameters are not decayed)":
        lambda: nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2)),
    "an nn.Embedding and an nn.Linear (the embedding is not decayed)": _Embedder,
    "an nn.Linear without bias, then one with bias, float64":
        lambda: nn.Sequential(nn.Linear(5, 3, bias=False), nn.Linear(3, 1)).double(),
}


def _make(make_net, seed):
    torch.manual_seed(seed)
    net = make_net()
    with torch.no_grad():  # BatchNorm starts at weight 1, bias 0: make every value telling
        for p in net.parameters():
            p.copy_(randn(*p.shape, seed=seed + p.numel(), dtype=p.dtype) + 0.5)
    return net


def _decayed_name(name, net):
    for mod_name, m in net.named_modules():
        if isinstance(m, nn.Linear) and name == (f"{mod_name}." if mod_name else "") + "weight":
            return True
    return False


def _missing_cause(net, held):
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    first = linears[0]
    if held == {id(first.weight)}:
        return ("only the first layer's weight was passed (net[0].weight), so the bias and "
                "every other parameter stay at their initial values; the optimizer must hold "
                "all of net's parameters, in two groups")
    if held == {id(p) for p in first.parameters()}:
        return ("only the first layer's parameters were passed (net[0].weight, net[0].bias): "
                "that works for one nn.Linear only; collect the weights of every nn.Linear")
    in_linear = {id(p) for m in linears for p in m.parameters()}
    if in_linear <= held:
        return ("parameters that belong to no nn.Linear (BatchNorm, Embedding, a module's own "
                "nn.Parameter) are left out: they must be trained too, just not decayed; put "
                "every parameter of net.parameters() that is not a Linear weight in the second "
                "group")
    return ("layers inside nested modules are missed (net.children() lists the top level only): "
            "go through net.modules() or net.named_parameters()")


def _wd_case(t, fn, net, lr, wd, label):
    what = f"weight_decay_sgd(net, lr={lr}, wd={wd}) for {label}"
    params = dict(net.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    opt = t.call(fn, net, lr, wd, what=what)
    if not isinstance(opt, torch.optim.SGD):
        raise Mismatch(f"{what} should return a torch.optim.SGD, but returned {type_name(opt)}"
                       + ("\n  likely cause: the function has no `return` statement"
                          if opt is None else ""))
    for n, p in params.items():
        if not torch.equal(p.detach(), before[n]):
            raise Mismatch(f"{what} changed net's parameter `{n}`; it should only build the "
                           "optimizer")
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    missing = [n for n, p in params.items() if id(p) not in held]
    if missing:
        raise Mismatch(f"{what}: the optimizer does not hold "
                       f"{', '.join(f'`{n}`' for n in missing)}, so "
                       f"{'it is' if len(missing) == 1 else 'they are'} never trained\n"
                       f"  likely cause: {_missing_cause(net, held)}")
    if len(held) > len(params):
        raise Mismatch(f"{what}: the optimizer holds tensors that are not net's parameters")
    lrs = sorted({g["lr"] for g in opt.param_groups if g["params"]})
    if lrs != [lr]:
        raise Mismatch(f"{what}: the optimizer's learning rate is {', '.join(map(str, lrs))}, "
                       f"expected lr = {lr}\n  likely cause: lr not passed to torch.optim.SGD")
    # Step 1, every gradient zero: only decay moves a parameter, by the factor 1 - lr * wd.
    for p in params.values():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in params.items():
        decayed = _decayed_name(n, net)
        expected = before[n] * (1 - lr * wd) if decayed else before[n]
        got = p.detach()
        if torch.allclose(got, expected, **tol(p.dtype, 10)):
            continue
        cause = None
        if not decayed and torch.allclose(got, before[n] * (1 - lr * wd), **tol(p.dtype, 10)):
            cause = ("biases are decayed: only the weights of nn.Linear layers should be "
                     "(a bias only shifts a unit's output)" if n.endswith("bias") else
                     f"`{n}` is not the weight of an nn.Linear layer, but it was decayed "
                     "(select the weights by module type, isinstance(m, nn.Linear), not by "
                     "name or shape)")
        elif decayed and torch.allclose(got, before[n], **tol(p.dtype, 10)):
            cause = f"`{n}`, the weight of an nn.Linear layer, is not decayed (weight_decay=wd " \
                    "in its parameter group)"
        elif decayed:
            ratio = (got / before[n]).median().item()
            cause = (f"the weights were multiplied by {fmt_number(ratio)} in a step with zero "
                     f"gradient, expected 1 - lr * wd = {fmt_number(1 - lr * wd)}: the weight "
                     f"decay is {fmt_number((1 - ratio) / lr)} instead of wd = {wd}")
        raise Mismatch(f"{what}: after opt.step() with every gradient zero, `{n}` is wrong\n"
                       f"  expected: {fmt_value(expected)}\n  received: {fmt_value(got)}"
                       + (f"\n  likely cause: {cause}" if cause else ""))
    # Step 2, known gradients: p <- p - lr * (g + wd * p) for decayed weights, p - lr * g else.
    start = {n: p.detach().clone() for n, p in params.items()}
    grads = {}
    for j, (n, p) in enumerate(params.items()):
        grads[n] = randn(*p.shape, seed=900 + j, dtype=p.dtype)
        p.grad = grads[n].clone()
    opt.step()
    momentum = any(g.get("momentum", 0) for g in opt.param_groups)
    for n, p in params.items():
        w = wd if _decayed_name(n, net) else 0.0
        expected = start[n] - lr * (grads[n] + w * start[n])
        cause = None
        if momentum:
            cause = "the optimizer uses momentum; plain SGD (momentum=0) is asked for"
        elif torch.allclose(p.detach(), start[n], **tol(p.dtype, 10)):
            cause = f"`{n}` did not move although its gradient is not zero"
        expect_tensor(p.detach(), expected, what=f"`{n}` after a step with known gradients "
                      f"of {what}", likely={cause: lambda p=p: p.detach()} if cause else None,
                      **tol(p.dtype, 10))


@CHAPTER.exercise("weight_decay_sgd", points=3)
def check_weight_decay_sgd(t, fn):
    with t.case("worked example: nn.Sequential(nn.Linear(2, 1)), lr = 0.1, wd = 0.5"):
        net = nn.Sequential(nn.Linear(2, 1))
        with torch.no_grad():
            net[0].weight.copy_(torch.tensor([[1.0, -2.0]]))
            net[0].bias.fill_(0.5)
        _wd_case(t, fn, net, 0.1, 0.5, "one nn.Linear(2, 1)")
    if not t.hidden:
        return
    for j, ((label, make_net), (lr, wd)) in enumerate(zip(
            NETS.items(), itertools.cycle(((0.1, 0.5), (0.03, 3.0), (0.5, 0.01))))):
        with t.case(label, weight=2 if j < 2 else 1):
            _wd_case(t, fn, _make(make_net, 10 * j), lr, wd, label)
    with t.case("wd = 0: plain SGD for every parameter"):
        _wd_case(t, fn, _make(NETS["three nn.Linear layers in an nn.Sequential"], 99), 0.2, 0.0,
                 "three nn.Linear layers")
