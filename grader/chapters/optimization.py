"""10_optimization: gradient descent and its variants (D2L ch. 12, CMU 11-785 lectures 6-7).

Instructor only: the references (from scratch; tests/test_optimization.py shows that they match
torch.optim step for step), the likely mistakes (`LIKELY`) and the hidden check of each exercise;
the visible checks are public (`grader.checks.optimization`).
"""

from __future__ import annotations

import math

import torch

from grader.cases import gen, randn
from grader.checks.optimization import (
    CHAPTER,
    bisection_case,
    contraction_case,
    cosine_case,
    gd_case,
    make_optimizer,
    optimizer_case,
    quadratic_case,
    warmup_case,
    zero_grad_case,
)
from grader.probes.optimization import Derivative

# --- references ---------------------------------------------------------------------------


def gd(grad_f, x0, lr, num_steps):
    xs = [x0.clone()]
    for _ in range(num_steps):
        xs.append(xs[-1] - lr * grad_f(xs[-1]))
    return torch.stack(xs)


def gd_contraction(eigvals, lr):
    return float((1 - lr * torch.as_tensor(eigvals, dtype=torch.float64)).abs().max())


def cosine_lr(step, total_steps, lr_max, lr_min=0.0):
    if step >= total_steps:
        return float(lr_min)
    return lr_min + (lr_max - lr_min) * (1 + math.cos(math.pi * step / total_steps)) / 2


def cosine_warmup_lr(step, total_steps, warmup_steps, lr_max, lr_min=0.0):
    if step < warmup_steps:
        return lr_max * step / warmup_steps
    return cosine_lr(step - warmup_steps, total_steps - warmup_steps, lr_max, lr_min)


def bisection_minimize(df, a, b, tol=1e-6):
    while b - a > tol:
        mid = (a + b) / 2
        if df(mid) > 0:
            b = mid
        else:
            a = mid
    return (a + b) / 2


def convex_argmin(kind, params, a, b):
    """The exact minimiser on [a, b] of the functions of `grader.probes.optimization.Derivative`."""
    if kind == "logexp":
        m = (math.log(2) - 3) / 3
    else:
        m = float(params[1])
    return min(max(m, a), b)


def quadratic_minimum(Q, c, b):
    x = -torch.linalg.solve(Q.double(), c.double())
    return x.to(Q.dtype), float(b + (c.double() @ x) / 2)


def _bisection_wrong_half(kind, params, a, b, tol):
    return bisection_minimize(lambda x: -Derivative(kind, params)(x), a, b, tol)


def _bisection_fixed_steps(kind, params, a, b, tol):
    df = Derivative(kind, params)
    for _ in range(20):
        mid = (a + b) / 2
        a, b = (a, mid) if df(mid) > 0 else (mid, b)
    return (a + b) / 2


def _quadratic_variants(Q, c, b):
    Qd, cd = Q.double(), c.double()
    x = -torch.linalg.solve(Qd, cd)
    q = float(cd @ x)  # -c^T Q^-1 c
    x_diag = -cd / torch.diagonal(Qd)
    return {
        "the minimiser solves Q x = -c: x_star = -Q^{-1} c (the minus sign is missing)":
            (-x.to(Q.dtype), float(b + q / 2)),
        "h_min = b - c^T Q^{-1} c / 2: the half is missing (h(x_star) = b + c^T x_star / 2)":
            (x.to(Q.dtype), float(b + q)),
        "h_min = b - c^T Q^{-1} c / 2 (sign: the minimum lies below b)":
            (x.to(Q.dtype), float(b - q / 2)),
        "only the diagonal of Q is used (-c / diag(Q) is right only when Q is diagonal)":
            (x_diag.to(Q.dtype), float(b + (cd @ x_diag) + x_diag @ Qd @ x_diag / 2)),
    }


class _Optimizer:
    def __init__(self, params):
        self.params = list(params)
        self.state = [{} for _ in self.params]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        for p, state in zip(self.params, self.state):
            if p.grad is not None:
                self.update(p, p.grad, state)


class SGDMomentum(_Optimizer):
    def __init__(self, params, lr, momentum=0.9):
        super().__init__(params)
        self.lr, self.momentum = lr, momentum

    def update(self, p, g, state):
        v = state.get("v")
        state["v"] = v = g.clone() if v is None else v.mul_(self.momentum).add_(g)
        p.sub_(self.lr * v)


class AdaGrad(_Optimizer):
    def __init__(self, params, lr=0.01, eps=1e-10):
        super().__init__(params)
        self.lr, self.eps = lr, eps

    def update(self, p, g, state):
        s = state.setdefault("s", torch.zeros_like(p))
        s.add_(g * g)
        p.sub_(self.lr * g / (s.sqrt() + self.eps))


class RMSProp(_Optimizer):
    def __init__(self, params, lr=0.01, alpha=0.99, eps=1e-8):
        super().__init__(params)
        self.lr, self.alpha, self.eps = lr, alpha, eps

    def update(self, p, g, state):
        s = state.setdefault("s", torch.zeros_like(p))
        s.mul_(self.alpha).add_((1 - self.alpha) * g * g)
        p.sub_(self.lr * g / (s.sqrt() + self.eps))


class Adam(_Optimizer):
    def __init__(self, params, lr=0.001, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params)
        self.lr, self.betas, self.eps = lr, betas, eps

    def update(self, p, g, state):
        b1, b2 = self.betas
        m = state.setdefault("m", torch.zeros_like(p))
        v = state.setdefault("v", torch.zeros_like(p))
        state["t"] = t = state.get("t", 0) + 1
        m.mul_(b1).add_((1 - b1) * g)
        v.mul_(b2).add_((1 - b2) * g * g)
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        p.sub_(self.lr * m_hat / (v_hat.sqrt() + self.eps))


# --- reference runs (what the checks compare with) -------------------------------------------


def gd_quadratic(H, c, x0, lr, num_steps):
    return gd(lambda x: H.to(x.dtype) @ (x - c.to(x.dtype)), x0, lr, num_steps)


def run(cls, inits, grads, kwargs):
    """The parameters after each step of `cls` given the gradients `grads` (None allowed)."""
    params = [x.detach().clone().requires_grad_(True) for x in inits]
    opt = cls(params, **kwargs)
    out = []
    for step in grads:
        for p, g in zip(params, step):
            p.grad = None if g is None else g.detach().clone().to(p.dtype)
        opt.step()
        out.append([p.detach().clone() for p in params])
    return out


def momentum_run(inits, grads, kwargs):
    return run(SGDMomentum, inits, grads, kwargs)


def adagrad_run(inits, grads, kwargs):
    return run(AdaGrad, inits, grads, kwargs)


def rmsprop_run(inits, grads, kwargs):
    return run(RMSProp, inits, grads, kwargs)


def adam_run(inits, grads, kwargs):
    return run(Adam, inits, grads, kwargs)


# --- likely mistakes ----------------------------------------------------------------------------


class _MomentumReset(SGDMomentum):
    def update(self, p, g, state):
        p.sub_(self.lr * g)


class _MomentumEMA(SGDMomentum):
    def update(self, p, g, state):
        v = state.setdefault("v", torch.zeros_like(p))
        v.mul_(self.momentum).add_((1 - self.momentum) * g)
        p.sub_(self.lr * v)


class _AdaGradNotAccumulated(AdaGrad):
    def update(self, p, g, state):
        p.sub_(self.lr * g / ((g * g).sqrt() + self.eps))


class _AdaGradEpsInside(AdaGrad):
    def update(self, p, g, state):
        s = state.setdefault("s", torch.zeros_like(p))
        s.add_(g * g)
        p.sub_(self.lr * g / (s + self.eps).sqrt())


class _RMSPropFirstSquare(RMSProp):
    def update(self, p, g, state):
        if "s" not in state:
            state["s"] = g * g
        else:
            state["s"].mul_(self.alpha).add_((1 - self.alpha) * g * g)
        p.sub_(self.lr * g / (state["s"].sqrt() + self.eps))


class _RMSPropEpsInside(RMSProp):
    def update(self, p, g, state):
        s = state.setdefault("s", torch.zeros_like(p))
        s.mul_(self.alpha).add_((1 - self.alpha) * g * g)
        p.sub_(self.lr * g / (s + self.eps).sqrt())


class _RMSPropSwapped(RMSProp):
    def update(self, p, g, state):
        s = state.setdefault("s", torch.zeros_like(p))
        s.mul_(1 - self.alpha).add_(self.alpha * g * g)
        p.sub_(self.lr * g / (s.sqrt() + self.eps))


class _AdamVariant(Adam):
    shift, correct, eps_inside = 0, True, False

    def update(self, p, g, state):
        b1, b2 = self.betas
        m = state.setdefault("m", torch.zeros_like(p))
        v = state.setdefault("v", torch.zeros_like(p))
        state["t"] = t = state.get("t", 0) + 1
        m.mul_(b1).add_((1 - b1) * g)
        v.mul_(b2).add_((1 - b2) * g * g)
        if self.correct:
            m, v = m / (1 - b1 ** (t + self.shift)), v / (1 - b2 ** (t + self.shift))
        denom = (v + self.eps).sqrt() if self.eps_inside else v.sqrt() + self.eps
        p.sub_(self.lr * m / denom)


class _AdamNoCorrection(_AdamVariant):
    correct = False


class _AdamOffByOne(_AdamVariant):
    shift = 1


class _AdamEpsInside(_AdamVariant):
    eps_inside = True


def _runs(**causes):
    return {cause: (lambda inits, grads, kwargs, cls=cls: run(cls, inits, grads, kwargs))
            for cause, cls in causes.items()}


def _rows_only(H, c, x0, lr, num_steps):
    return gd_quadratic(H, c, x0, lr, num_steps)[1:]


LIKELY = {
    "bisection_minimize": {
        "the wrong half is kept: where df(mid) > 0 the function rises, so the minimum lies left "
        "of mid (b = mid)": _bisection_wrong_half,
        "a fixed number of halvings: stop when b - a <= tol instead": _bisection_fixed_steps,
    },
    "quadratic_minimum": {cause: (lambda Q, c, b, cause=cause: _quadratic_variants(Q, c, b)[cause])
                          for cause in _quadratic_variants(torch.eye(1), torch.ones(1), 0.0)},
    "gd_quadratic": {
        "the trajectory should have num_steps + 1 rows (row 0 is x0)": _rows_only,
        "the step goes uphill: x <- x - lr * grad_f(x)":
            lambda H, c, x0, lr, n: gd_quadratic(H, c, x0, -lr, n),
    },
    "gd_contraction": {
        "the worst case is the largest factor (max), not the smallest":
            lambda e, lr: float((1 - lr * e.double()).abs().min()),
        "the factor is abs(1 - lr * eigenvalue): a negative factor also shrinks or grows the "
        "error (missing abs)": lambda e, lr: float((1 - lr * e.double()).max()),
    },
    "cosine_lr": {
        "the cosine uses step / (total_steps - 1); it should reach lr_min at step = "
        "total_steps": lambda s, n, hi, lo: lo + (hi - lo) * (1 + math.cos(math.pi * s / (n - 1)))
        / 2 if n > 1 and s <= n else None,
        "after total_steps the rate should stay at lr_min (not clamped)":
            lambda s, n, hi, lo: lo + (hi - lo) * (1 + math.cos(math.pi * s / n)) / 2,
    },
    "cosine_warmup_lr": {
        "the cosine part should start after the warm-up: use (step - warmup_steps) / "
        "(total_steps - warmup_steps)": lambda s, n, w, hi, lo: hi * s / w if s < w
        else cosine_lr(s, n, hi, lo),
        "the warm-up should rise linearly from 0 to lr_max: lr_max * step / warmup_steps":
            lambda s, n, w, hi, lo: lo + (hi - lo) * s / w if s < w
            else cosine_lr(s - w, n - w, hi, lo),
    },
    "momentum_run": _runs(**{
        "the velocity is reset at every step (v must persist across step() calls)":
            _MomentumReset,
        "v = momentum * v + (1 - momentum) * grad is not what torch.optim.SGD does; use "
        "v = momentum * v + grad": _MomentumEMA}),
    "adagrad_run": _runs(**{
        "s is not accumulated: s += grad**2 (s = grad**2 forgets the past)":
            _AdaGradNotAccumulated,
        "eps inside the square root: use sqrt(s) + eps": _AdaGradEpsInside}),
    "rmsprop_run": _runs(**{
        "s should start at 0, not at the first grad**2": _RMSPropFirstSquare,
        "eps inside the square root: use sqrt(s) + eps": _RMSPropEpsInside,
        "alpha and 1 - alpha swapped: s = alpha * s + (1 - alpha) * grad**2": _RMSPropSwapped}),
    "adam_run": _runs(**{
        "no bias correction: divide m by (1 - beta1**t) and v by (1 - beta2**t)":
            _AdamNoCorrection,
        "bias correction off by one step: t counts steps from 1": _AdamOffByOne,
        "eps inside the square root: use sqrt(v_hat) + eps": _AdamEpsInside}),
}


# --- hidden checks --------------------------------------------------------------------------


@CHAPTER.hidden("gd")
def hidden_gd(t, gd_):
    for seed, (dtype, d, n) in enumerate([(torch.float64, 3, 20), (torch.float32, 5, 12),
                                          (torch.float64, 1, 1)]):
        A = randn(d, d, seed=100 + seed, dtype=torch.float64)
        H = (A @ A.T / d + 0.1 * torch.eye(d, dtype=torch.float64)).to(dtype)
        c = randn(d, seed=200 + seed, dtype=dtype)
        x0 = randn(d, seed=300 + seed, dtype=dtype)
        gd_case(t, gd_, H, c, x0, 0.3, n, f"random quadratic in {d} dimensions, {dtype}, "
                                          f"{n} steps")
    H = torch.diag(torch.tensor([1.0, 10.0], dtype=torch.float64))
    c = torch.zeros(2, dtype=torch.float64)
    x0 = torch.tensor([1.0, 1.0], dtype=torch.float64)
    gd_case(t, gd_, H, c, x0, 0.0, 3, "lr = 0: the trajectory repeats x0")
    gd_case(t, gd_, H, c, x0, 0.25, 8, "lr above 2 / lambda_max: the trajectory diverges")


@CHAPTER.hidden("gd_contraction")
def hidden_gd_contraction(t, fn):
    e = torch.tensor([1.0, 10.0], dtype=torch.float64)
    for lr in (0.05, 0.19, 0.2, 0.3):
        contraction_case(t, fn, e, lr, f"eigenvalues 1 and 10, lr = {lr}")
    e = (randn(6, seed=1).abs() * 5 + 0.1).to(torch.float32)
    contraction_case(t, fn, e, 0.15, "six random eigenvalues (float32), lr = 0.15")
    contraction_case(t, fn, torch.tensor([2.0]), 0.5, "one eigenvalue, lr = 1 / lambda: 0")


def _grads(shapes, steps, seed, dtype, scale=1.0, zero_every=0, none_for=(), none_odd=()):
    out = []
    for k in range(steps):
        row = []
        for j, shape in enumerate(shapes):
            if j in none_for or (j in none_odd and k % 2):
                row.append(None)
            elif zero_every and k % zero_every == zero_every - 1:
                row.append(torch.zeros(shape, dtype=dtype))
            else:
                row.append(randn(*shape, seed=seed + 1000 * k + j, dtype=dtype, scale=scale))
        out.append(row)
    return out


def hidden_optimizer(t, Cls, kind, defaults, other):
    shapes = [(5,), (3, 4), (1,)]
    for dtype, seed in ((torch.float64, 11), (torch.float32, 12)):
        inits = [randn(*s, seed=seed * 10 + i, dtype=dtype) for i, s in enumerate(shapes)]
        grads = _grads(shapes, 40, seed * 100, dtype)
        optimizer_case(t, Cls, kind, inits, grads, other,
                       f"40 steps, {dtype}, params from an iterator (as model.parameters())",
                       iterator=True, weight=2)
    inits = [randn(*s, seed=20 + i) for i, s in enumerate(shapes)]
    optimizer_case(t, Cls, kind, inits, _grads(shapes, 15, 300, torch.float64, zero_every=3,
                                               none_for=(2,)), defaults,
                   "default hyper-parameters, zero gradients every 3rd step, a parameter "
                   "whose .grad stays None")
    optimizer_case(t, Cls, kind, inits, _grads(shapes, 15, 400, torch.float64, scale=1e-9),
                   {**defaults, "lr": 0.1},
                   "tiny gradients (~1e-9): where eps goes matters")
    if kind != "adam":  # Adam's bias correction counts the steps of each parameter
        optimizer_case(t, Cls, kind, inits, _grads(shapes, 12, 500, torch.float64,
                                                   none_odd=(0,)), other,
                       "a parameter whose .grad is None every other step (skipped, its state "
                       "untouched)")
    zero_grad_case(t, Cls, inits, defaults)
    with t.case("no torch.optim: not a subclass of torch.optim.Optimizer"):
        make_optimizer(t, Cls, inits, defaults, "the optimiser")


@CHAPTER.hidden("bisection_minimize")
def hidden_bisection_minimize(t, fn):
    r = gen(11)
    m = float(torch.rand((), generator=r)) * 4 - 2
    bisection_case(t, fn, "quadratic", [0.5, m], -3.0, 3.0, 1e-8,
                   "a quadratic with its minimum inside [-3, 3], tol = 1e-8")
    bisection_case(t, fn, "quadratic", [2.0, -5.0 - float(torch.rand((), generator=r))], -1.0, 4.0,
                   1e-6, "a quadratic whose minimum is left of [-1, 4]: the answer is a")
    bisection_case(t, fn, "quadratic", [1.0, 7.0], -1.0, 4.0, 1e-6,
                   "a quadratic whose minimum is right of [-1, 4]: the answer is b")
    bisection_case(t, fn, "logexp", [], -10.0, 5.0, 1e-10,
                   "log(exp(x) + exp(-2x - 3)) on [-10, 5], tol = 1e-10")
    bisection_case(t, fn, "smoothabs", [50.0, m / 3], -2.0, 2.0, 1e-7,
                   "a steep smoothed |x - m| on [-2, 2], tol = 1e-7")


@CHAPTER.hidden("quadratic_minimum")
def hidden_quadratic_minimum(t, fn):
    A = randn(5, 5, seed=21, dtype=torch.float64)
    quadratic_case(t, fn, A @ A.T + torch.eye(5, dtype=torch.float64),
                   randn(5, seed=22, dtype=torch.float64), 0.5, "a random 5 x 5 Q (float64)")
    B = randn(3, 3, seed=23)
    quadratic_case(t, fn, B @ B.T + torch.eye(3), randn(3, seed=24), -2.0,
                   "a random 3 x 3 Q (float32)")
    quadratic_case(t, fn, torch.tensor([[4.0]], dtype=torch.float64),
                   torch.tensor([3.0], dtype=torch.float64), 0.0, "one dimension")
    R = torch.tensor([[0.6, -0.8], [0.8, 0.6]], dtype=torch.float64)
    quadratic_case(t, fn, R @ torch.diag(torch.tensor([1.0, 1000.0], dtype=torch.float64)) @ R.T,
                   torch.tensor([1.0, -2.0], dtype=torch.float64), 3.0,
                   "an ill-conditioned, rotated Q (condition number 1000)")


@CHAPTER.hidden("SGDMomentum")
def hidden_SGDMomentum(t, Cls):
    hidden_optimizer(t, Cls, "momentum", {"lr": 0.01}, {"lr": 0.05, "momentum": 0.5})


@CHAPTER.hidden("AdaGrad")
def hidden_AdaGrad(t, Cls):
    hidden_optimizer(t, Cls, "adagrad", {}, {"lr": 0.3, "eps": 1e-6})


@CHAPTER.hidden("RMSProp")
def hidden_RMSProp(t, Cls):
    hidden_optimizer(t, Cls, "rmsprop", {}, {"lr": 0.02, "alpha": 0.9, "eps": 1e-6})


@CHAPTER.hidden("Adam")
def hidden_Adam(t, Cls):
    hidden_optimizer(t, Cls, "adam", {}, {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-6})


@CHAPTER.hidden("cosine_lr")
def hidden_cosine_lr(t, fn):
    for step, total, hi, lo in ((0, 10, 1.0, 0.0), (3, 10, 1.0, 0.0), (10, 10, 1.0, 0.0),
                                (15, 10, 1.0, 0.0), (7, 40, 0.3, 0.05), (39, 40, 0.3, 0.05),
                                (200, 40, 0.3, 0.05), (1, 1, 2.0, 0.5), (0, 1, 2.0, 0.5)):
        cosine_case(t, fn, step, total, hi, lo, f"step {step} of {total}")




@CHAPTER.hidden("cosine_warmup_lr")
def hidden_cosine_warmup_lr(t, fn):
    for step, total, warmup, hi, lo in ((0, 20, 5, 1.0, 0.0), (2, 20, 5, 1.0, 0.0),
                                        (5, 20, 5, 1.0, 0.0), (12, 20, 5, 1.0, 0.0),
                                        (20, 20, 5, 1.0, 0.0), (30, 20, 5, 1.0, 0.0),
                                        (3, 50, 4, 0.2, 0.05), (27, 50, 4, 0.2, 0.05),
                                        (7, 30, 0, 0.2, 0.05), (1, 2, 1, 0.4, 0.1)):
        warmup_case(t, fn, step, total, warmup, hi, lo,
                    f"step {step} of {total}, {warmup} warm-up steps")
