"""Chapter 10: the from-scratch references match torch.optim step for step; the hidden checks
accept correct answers written differently and reject realistic buggy ones with specific
feedback."""

import math

import pytest
import torch

from grader.chapters import optimization as ref

CH = "10_optimization"


# --- references against torch.optim and closed forms ----------------------------------------

PAIRS = [
    (ref.SGDMomentum, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
    (ref.SGDMomentum, torch.optim.SGD, {"lr": 0.3, "momentum": 0.5}),
    (ref.AdaGrad, torch.optim.Adagrad, {"lr": 0.1, "eps": 1e-10}),
    (ref.AdaGrad, torch.optim.Adagrad, {"lr": 0.3, "eps": 1e-6}),
    (ref.RMSProp, torch.optim.RMSprop, {"lr": 0.01, "alpha": 0.99, "eps": 1e-8}),
    (ref.RMSProp, torch.optim.RMSprop, {"lr": 0.02, "alpha": 0.9, "eps": 1e-6}),
    (ref.Adam, torch.optim.Adam, {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-8}),
    (ref.Adam, torch.optim.Adam, {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-6}),
]


@pytest.mark.parametrize("mine,theirs,kwargs", PAIRS)
@pytest.mark.parametrize("scale", [1.0, 1e-9])
def test_optimizers_match_torch_optim(mine, theirs, kwargs, scale):
    torch.manual_seed(0)
    shapes = [(5,), (3, 4), (1,)]
    inits = [torch.randn(s, dtype=torch.float64) for s in shapes]
    grads = []
    for k in range(50):
        grads.append([None if j == 2 else (torch.zeros(s, dtype=torch.float64) if k % 7 == 6
                                           else torch.randn(s, dtype=torch.float64) * scale)
                      for j, s in enumerate(shapes)])
    got = ref.run(mine, inits, grads, kwargs)
    expected = ref.run(theirs, inits, grads, kwargs)
    for a, b in zip(got, expected):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, atol=1e-12, rtol=1e-10)


def test_gd_contraction_predicts_convergence():
    e = torch.tensor([1.0, 10.0], dtype=torch.float64)
    H = torch.diag(e)
    for lr in (0.05, 0.15, 0.19, 0.21, 0.25):
        traj = ref.gd(lambda x: H @ x, torch.ones(2, dtype=torch.float64), lr, 300)
        rho = ref.gd_contraction(e, lr)
        assert (traj[-1].norm() < 1e-3) == (rho < 1)
        ratio = (traj[-1].norm() / traj[-2].norm()).item()
        assert ratio == pytest.approx(rho, rel=1e-6)


def test_cosine_lr_endpoints():
    assert ref.cosine_lr(0, 10, 1.0, 0.1) == 1.0
    assert ref.cosine_lr(5, 10, 1.0, 0.1) == pytest.approx(0.55)
    assert ref.cosine_lr(10, 10, 1.0, 0.1) == pytest.approx(0.1)
    assert ref.cosine_lr(12, 10, 1.0, 0.1) == 0.1


def test_zero_grad_sets_none():
    p = torch.zeros(3, requires_grad=True)
    for cls in (ref.SGDMomentum, ref.AdaGrad, ref.RMSProp, ref.Adam):
        opt = cls([p], lr=0.1)
        p.grad = torch.ones(3)
        opt.step()
        opt.zero_grad()
        assert p.grad is None and p.grad_fn is None


# --- correct variants ----------------------------------------------------------------------

def gd_loop(grad_f, x0, lr, num_steps):
    out = torch.empty(num_steps + 1, *x0.shape, dtype=x0.dtype)
    out[0] = x0
    x = x0.clone()
    for k in range(num_steps):
        x -= lr * grad_f(x)
        out[k + 1] = x
    return out


def gd_contraction_loop(eigvals, lr):
    return max(abs(1 - lr * float(e)) for e in eigvals)


def cosine_lr_clamped(step, total_steps, lr_max, lr_min=0.0):
    frac = min(step, total_steps) / total_steps
    return float(lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * frac)))


def cosine_warmup_branches(step, total_steps, warmup_steps, lr_max, lr_min=0.0):
    if step < warmup_steps:
        return float(lr_max * step / warmup_steps)
    if step > total_steps:
        return float(lr_min)
    t = (step - warmup_steps) / (total_steps - warmup_steps)
    return lr_min + (lr_max - lr_min) * (1 + math.cos(math.pi * t)) / 2


def cosine_warmup_torchlike(step, total_steps, warmup_steps, lr_max, lr_min=0.0):
    warm = min(1.0, step / warmup_steps) if warmup_steps else 1.0
    frac = min(max(step - warmup_steps, 0), total_steps - warmup_steps)
    cos = lr_min + (lr_max - lr_min) * 0.5 * (1 + math.cos(math.pi * frac
                                                          / (total_steps - warmup_steps)))
    return lr_max * warm if step < warmup_steps else cos


class SGDMomentumList:
    """Velocities as a list, lr inside the velocity: v = m * v + lr * g, p -= v. For a constant
    lr this is the same update as torch.optim.SGD (v here is lr times torch's buffer)."""

    def __init__(self, params, lr, momentum=0.9):
        self.params, self.lr, self.momentum = list(params), lr, momentum
        self.v = [torch.zeros_like(p) for p in self.params]

    def step(self):
        with torch.no_grad():
            for p, v in zip(self.params, self.v):
                if p.grad is None:
                    continue
                v.mul_(self.momentum).add_(self.lr * p.grad)
                p.sub_(v)

    def zero_grad(self):
        for p in self.params:
            p.grad = None


class SGDMomentumDict:
    def __init__(self, params, lr, momentum=0.9):
        self.params = list(params)
        self.lr, self.momentum, self.state = lr, momentum, {}

    @torch.no_grad()
    def step(self):
        for i, p in enumerate(self.params):
            if p.grad is not None:
                v = self.momentum * self.state.get(i, torch.zeros_like(p)) + p.grad
                self.state[i] = v
                p -= self.lr * v

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None


class AdaGradData:
    def __init__(self, params, lr=0.01, eps=1e-10):
        self.params, self.lr, self.eps = list(params), lr, eps
        self.s = [torch.zeros_like(p.data) for p in self.params]

    def step(self):
        for p, s in zip(self.params, self.s):
            if p.grad is not None:
                s += p.grad.data ** 2
                p.data -= self.lr * p.grad.data / (torch.sqrt(s) + self.eps)

    def zero_grad(self):
        for p in self.params:
            p.grad = None


class RMSPropLerp:
    def __init__(self, params, lr=0.01, alpha=0.99, eps=1e-8):
        self.params, self.lr, self.alpha, self.eps = list(params), lr, alpha, eps
        self.s = {}

    def step(self):
        with torch.no_grad():
            for i, p in enumerate(self.params):
                if p.grad is None:
                    continue
                s = self.s.setdefault(i, torch.zeros_like(p))
                s.lerp_(p.grad.square(), 1 - self.alpha)
                p.addcdiv_(p.grad, s.sqrt().add(self.eps), value=-self.lr)

    def zero_grad(self):
        for p in self.params:
            p.grad = None


class AdamGlobal:
    """One step counter for all parameters, torch-style step size."""

    def __init__(self, params, lr=0.001, betas=(0.9, 0.999), eps=1e-8):
        self.params = list(params)
        self.lr, (self.b1, self.b2), self.eps, self.t = lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self):
        self.t += 1
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            m.mul_(self.b1).add_(p.grad, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(p.grad, p.grad, value=1 - self.b2)
            denom = (v / (1 - self.b2 ** self.t)).sqrt() + self.eps
            p.addcdiv_(m, denom, value=-self.lr / (1 - self.b1 ** self.t))

    def zero_grad(self):
        for p in self.params:
            p.grad = None


def bisection_recursive(df, a, b, tol=1e-6):
    if b - a <= tol:
        return (a + b) / 2
    mid = a + (b - a) / 2
    return bisection_recursive(df, a, mid, tol) if df(mid) > 0 else bisection_recursive(df, mid, b, tol)


def bisection_bounds_list(df, a, b, tol=1e-6):
    lo_hi = [float(a), float(b)]
    while lo_hi[1] - lo_hi[0] > tol:
        m = sum(lo_hi) / 2
        lo_hi[df(m) > 0] = m  # df(m) > 0: the minimum is left of m, so m becomes the upper end
    return 0.5 * (lo_hi[0] + lo_hi[1])


def quadratic_minimum_cholesky(Q, c, b):
    L = torch.linalg.cholesky(Q)
    x = -torch.cholesky_solve(c.unsqueeze(1), L).squeeze(1)
    return x, (b + 0.5 * torch.dot(c, x)).item()


def quadratic_minimum_inverse(Q, c, b):
    Qi = torch.linalg.inv(Q.double())
    x = -(Qi @ c.double())
    return x.to(Q.dtype), float(b - 0.5 * c.double() @ Qi @ c.double())


CORRECT = [
    ("gd", ref.gd), ("gd", gd_loop),
    ("gd_contraction", ref.gd_contraction), ("gd_contraction", gd_contraction_loop),
    ("cosine_lr", ref.cosine_lr), ("cosine_lr", cosine_lr_clamped),
    ("SGDMomentum", ref.SGDMomentum), ("SGDMomentum", SGDMomentumList),
    ("SGDMomentum", SGDMomentumDict),
    ("AdaGrad", ref.AdaGrad), ("AdaGrad", AdaGradData),
    ("RMSProp", ref.RMSProp), ("RMSProp", RMSPropLerp),
    ("Adam", ref.Adam), ("Adam", AdamGlobal),
    ("cosine_warmup_lr", ref.cosine_warmup_lr), ("cosine_warmup_lr", cosine_warmup_branches),
    ("cosine_warmup_lr", cosine_warmup_torchlike),
    ("bisection_minimize", ref.bisection_minimize), ("bisection_minimize", bisection_recursive),
    ("bisection_minimize", bisection_bounds_list),
    ("quadratic_minimum", ref.quadratic_minimum), ("quadratic_minimum", quadratic_minimum_cholesky),
    ("quadratic_minimum", quadratic_minimum_inverse),
]


# --- buggy variants ------------------------------------------------------------------------

def gd_rows(grad_f, x0, lr, num_steps):
    return ref.gd(grad_f, x0, lr, num_steps)[1:]


def gd_mutates(grad_f, x0, lr, num_steps):
    xs = [x0.clone()]
    for _ in range(num_steps):
        x0 -= lr * grad_f(x0)
        xs.append(x0.clone())
    return torch.stack(xs)


def gd_uphill(grad_f, x0, lr, num_steps):
    return ref.gd(grad_f, x0, -lr, num_steps)


def gd_list(grad_f, x0, lr, num_steps):
    return [x for x in ref.gd(grad_f, x0, lr, num_steps)]


def contraction_min(eigvals, lr):
    return float((1 - lr * eigvals).abs().min())


def contraction_no_abs(eigvals, lr):
    return float((1 - lr * eigvals).max())


def contraction_tensor(eigvals, lr):
    return (1 - lr * eigvals).abs().max()


def contraction_inverse(eigvals, lr):
    return float((1 - lr / eigvals).abs().max())


def cosine_minus_one(step, total_steps, lr_max, lr_min=0.0):
    frac = min(step / (total_steps - 1), 1.0) if total_steps > 1 else 1.0
    return lr_min + (lr_max - lr_min) * (1 + math.cos(math.pi * frac)) / 2


def cosine_unclamped(step, total_steps, lr_max, lr_min=0.0):
    return lr_min + (lr_max - lr_min) * (1 + math.cos(math.pi * step / total_steps)) / 2


def cosine_no_min(step, total_steps, lr_max, lr_min=0.0):
    return ref.cosine_lr(step, total_steps, lr_max, 0.0)


def cosine_tensor(step, total_steps, lr_max, lr_min=0.0):
    return torch.tensor(ref.cosine_lr(step, total_steps, lr_max, lr_min))


def warmup_cosine_from_zero(step, total_steps, warmup_steps, lr_max, lr_min=0.0):
    if step < warmup_steps:
        return lr_max * step / warmup_steps
    return ref.cosine_lr(step, total_steps, lr_max, lr_min)


def warmup_from_min(step, total_steps, warmup_steps, lr_max, lr_min=0.0):
    if step < warmup_steps:
        return lr_min + (lr_max - lr_min) * step / warmup_steps
    return ref.cosine_lr(step - warmup_steps, total_steps - warmup_steps, lr_max, lr_min)


def warmup_off_by_one(step, total_steps, warmup_steps, lr_max, lr_min=0.0):
    if step < warmup_steps:
        return lr_max * (step + 1) / warmup_steps
    return ref.cosine_lr(step - warmup_steps, total_steps - warmup_steps, lr_max, lr_min)


def warmup_unclamped(step, total_steps, warmup_steps, lr_max, lr_min=0.0):
    if step < warmup_steps:
        return lr_max * step / warmup_steps
    t = (step - warmup_steps) / (total_steps - warmup_steps)
    return lr_min + (lr_max - lr_min) * (1 + math.cos(math.pi * t)) / 2


class MomentumReset(ref.SGDMomentum):
    def update(self, p, g, state):
        v = g.clone()  # a new velocity every step
        p.sub_(self.lr * v)


class MomentumEMA(ref.SGDMomentum):
    def update(self, p, g, state):
        v = state.setdefault("v", torch.zeros_like(p))
        v.mul_(self.momentum).add_((1 - self.momentum) * g)
        p.sub_(self.lr * v)


class ZeroesGrads:
    def zero_grad(self):
        for p in self.params:
            if p.grad is not None:
                p.grad.zero_()


class MomentumZeroes(ZeroesGrads, ref.SGDMomentum):
    pass


class MomentumRecorded(ref.SGDMomentum):
    def step(self):  # no torch.no_grad()
        for p, state in zip(self.params, self.state):
            if p.grad is not None:
                self.update(p, p.grad, state)


class MomentumRebinds(ref.SGDMomentum):
    @torch.no_grad()
    def step(self):
        for p, state in zip(self.params, self.state):
            if p.grad is not None:
                v = state["v"] = self.momentum * state.get("v", 0) + p.grad
                p = p - self.lr * v  # noqa: PLW2901 - the bug: rebinds the loop variable


class MomentumNoneAsZero(ref.SGDMomentum):
    """A None gradient treated as zeros: the velocity still decays and moves p."""

    @torch.no_grad()
    def step(self):
        for p, state in zip(self.params, self.state):
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            self.update(p, g, state)


class MomentumTorch(torch.optim.SGD):
    def __init__(self, params, lr, momentum=0.9):
        super().__init__(params, lr=lr, momentum=momentum)


class AdaGradNotAccumulated(ref.AdaGrad):
    def update(self, p, g, state):
        s = g ** 2
        p.sub_(self.lr * g / (s.sqrt() + self.eps))


class AdaGradEpsInside(ref.AdaGrad):
    def update(self, p, g, state):
        s = state.setdefault("s", torch.zeros_like(p))
        s.add_(g * g)
        p.sub_(self.lr * g / torch.sqrt(s + self.eps))


class AdaGradZeroes(ZeroesGrads, ref.AdaGrad):
    pass


class AdaGradDelegates:
    def __init__(self, params, lr=0.01, eps=1e-10):
        self.opt = torch.optim.Adagrad(list(params), lr=lr, eps=eps)

    def step(self):
        self.opt.step()

    def zero_grad(self):
        self.opt.zero_grad()


class RMSPropFirstSquare(ref.RMSProp):
    def update(self, p, g, state):
        if "s" not in state:
            state["s"] = g * g
        else:
            state["s"] = self.alpha * state["s"] + (1 - self.alpha) * g * g
        p.sub_(self.lr * g / (state["s"].sqrt() + self.eps))


class RMSPropEpsInside(ref.RMSProp):
    def update(self, p, g, state):
        s = state.setdefault("s", torch.zeros_like(p))
        s.mul_(self.alpha).add_((1 - self.alpha) * g * g)
        p.sub_(self.lr * g / (s + self.eps).sqrt())


class RMSPropSwapped(ref.RMSProp):
    def update(self, p, g, state):
        s = state.setdefault("s", torch.zeros_like(p))
        s.mul_(1 - self.alpha).add_(self.alpha * g * g)
        p.sub_(self.lr * g / (s.sqrt() + self.eps))


class RMSPropZeroes(ZeroesGrads, ref.RMSProp):
    pass


class AdamNoCorrection(ref.Adam):
    def update(self, p, g, state):
        b1, b2 = self.betas
        m = state.setdefault("m", torch.zeros_like(p))
        v = state.setdefault("v", torch.zeros_like(p))
        m.mul_(b1).add_((1 - b1) * g)
        v.mul_(b2).add_((1 - b2) * g * g)
        p.sub_(self.lr * m / (v.sqrt() + self.eps))


class AdamOffByOne(ref.Adam):
    """t counted from 0 and incremented before use, then used as t + 1."""

    def update(self, p, g, state):
        b1, b2 = self.betas
        m = state.setdefault("m", torch.zeros_like(p))
        v = state.setdefault("v", torch.zeros_like(p))
        state["t"] = t = state.get("t", 0) + 1
        m.mul_(b1).add_((1 - b1) * g)
        v.mul_(b2).add_((1 - b2) * g * g)
        m_hat, v_hat = m / (1 - b1 ** (t + 1)), v / (1 - b2 ** (t + 1))
        p.sub_(self.lr * m_hat / (v_hat.sqrt() + self.eps))


class AdamEpsInside(ref.Adam):
    def update(self, p, g, state):
        b1, b2 = self.betas
        m = state.setdefault("m", torch.zeros_like(p))
        v = state.setdefault("v", torch.zeros_like(p))
        state["t"] = t = state.get("t", 0) + 1
        m.mul_(b1).add_((1 - b1) * g)
        v.mul_(b2).add_((1 - b2) * g * g)
        p.sub_(self.lr * (m / (1 - b1 ** t)) / torch.sqrt(v / (1 - b2 ** t) + self.eps))


class AdamSubclass(torch.optim.Optimizer):
    def __init__(self, params, lr=0.001, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, {"lr": lr})
        self.inner = ref.Adam(self.param_groups[0]["params"], lr, betas, eps)

    def step(self, closure=None):
        self.inner.step()


class AdamZeroes(ZeroesGrads, ref.Adam):
    pass


def bisection_wrong_half(df, a, b, tol=1e-6):
    while b - a > tol:
        mid = (a + b) / 2
        if df(mid) < 0:
            b = mid
        else:
            a = mid
    return (a + b) / 2


def bisection_twenty_steps(df, a, b, tol=1e-6):
    for _ in range(20):
        mid = (a + b) / 2
        a, b = (a, mid) if df(mid) > 0 else (mid, b)
    return (a + b) / 2


def bisection_grid(df, a, b, tol=1e-6):
    # cuts a tenth off the interval per call: the right answer, but far too many calls
    while b - a > tol:
        x = a + (b - a) / 10
        if df(x) > 0:
            b = x
        else:
            a = x
    return (a + b) / 2


def bisection_calls_twice(df, a, b, tol=1e-6):
    while b - a > tol:
        mid = (a + b) / 2
        if df(mid) > 0 and df(mid) != 0:
            b = mid
        else:
            a = mid
    return (a + b) / 2


def bisection_tensor(df, a, b, tol=1e-6):
    return torch.tensor(ref.bisection_minimize(df, a, b, tol))


def quadratic_no_minus(Q, c, b):
    x = torch.linalg.solve(Q, c)
    return x, float(b - c @ x / 2)


def quadratic_no_half(Q, c, b):
    x = -torch.linalg.solve(Q, c)
    return x, float(b + c @ x)


def quadratic_diagonal(Q, c, b):
    x = -c / torch.diagonal(Q)
    return x, float(b + c @ x + x @ Q @ x / 2)


def quadratic_tensor_min(Q, c, b):
    x = -torch.linalg.solve(Q, c)
    return x, b + c @ x / 2


BUGGY = [
    ("bisection_minimize", bisection_wrong_half, "the wrong half is kept"),
    ("bisection_minimize", bisection_twenty_steps, "a fixed number of halvings"),
    ("bisection_minimize", bisection_grid, "called df"),
    ("bisection_minimize", bisection_calls_twice, "called df"),
    ("bisection_minimize", bisection_tensor, "Python float"),
    ("quadratic_minimum", quadratic_no_minus, "the minus sign is missing"),
    ("quadratic_minimum", quadratic_no_half, "the half is missing"),
    ("quadratic_minimum", quadratic_diagonal, "only the diagonal of Q"),
    ("quadratic_minimum", quadratic_tensor_min, "Python float"),
    ("gd", gd_rows, "num_steps + 1 rows"),
    ("gd", gd_mutates, "modified its input"),
    ("gd", gd_uphill, "uphill"),
    ("gd", gd_list, "torch.tensor"),
    ("gd_contraction", contraction_min, "largest factor (max)"),
    ("gd_contraction", contraction_no_abs, "missing abs"),
    ("gd_contraction", contraction_tensor, "Python float"),
    ("gd_contraction", contraction_inverse, "expected"),
    ("cosine_lr", cosine_minus_one, "total_steps - 1"),
    ("cosine_lr", cosine_unclamped, "not clamped"),
    ("cosine_lr", cosine_no_min, "expected"),
    ("cosine_lr", cosine_tensor, "Python float"),
    ("cosine_warmup_lr", warmup_cosine_from_zero, "start after the warm-up"),
    ("cosine_warmup_lr", warmup_from_min, "from 0 to lr_max"),
    ("cosine_warmup_lr", warmup_off_by_one, "expected"),
    ("cosine_warmup_lr", warmup_unclamped, "expected"),
    ("SGDMomentum", MomentumReset, "velocity is reset"),
    ("SGDMomentum", MomentumEMA, "1 - momentum"),
    ("SGDMomentum", MomentumZeroes, "not to zeros"),
    ("SGDMomentum", MomentumRecorded, "torch.no_grad()"),
    ("SGDMomentum", MomentumRebinds, "not updated in place"),
    ("SGDMomentum", MomentumTorch, "torch.optim"),
    ("SGDMomentum", MomentumNoneAsZero, "None every other step"),
    ("AdaGrad", AdaGradNotAccumulated, "not accumulated"),
    ("AdaGrad", AdaGradEpsInside, "eps inside the square root"),
    ("AdaGrad", AdaGradZeroes, "not to zeros"),
    ("AdaGrad", AdaGradDelegates, "torch.optim"),
    ("RMSProp", RMSPropFirstSquare, "start at 0"),
    ("RMSProp", RMSPropEpsInside, "eps inside the square root"),
    ("RMSProp", RMSPropSwapped, "swapped"),
    ("RMSProp", RMSPropZeroes, "not to zeros"),
    ("Adam", AdamNoCorrection, "no bias correction"),
    ("Adam", AdamOffByOne, "off by one"),
    ("Adam", AdamEpsInside, "eps inside the square root"),
    ("Adam", AdamSubclass, "torch.optim"),
    ("Adam", AdamZeroes, "not to zeros"),
]


def test_variant_tables_cover_every_exercise():
    from grader.registry import get_chapter

    names = set(get_chapter(CH).exercises)
    assert {n for n, _ in CORRECT} == names
    assert {n for n, *_ in BUGGY} == names
