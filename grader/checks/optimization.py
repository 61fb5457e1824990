"""10_optimization: the visible checks (worked examples) of each exercise.

Public: this module ships to students. Reference values come from `t.ref`, and what likely
mistakes produce from `t.likely`; the references and the hidden checks are the instructor's
(`grader.chapters.optimization`). The helpers here judge a student's output; none of them
computes an expected value.
"""

from __future__ import annotations

import math

import torch

from grader.feedback import Mismatch, expect_tensor, fmt_number
from grader.registry import Chapter
from grader.remote import Handle

CHAPTER = Chapter("10_optimization", "Optimisation: gradient descent and its variants")

OPTIM = ("torch.optim", None, "torch.optim")
OPTIMIZER_BASE = "torch.optim.optimizer.Optimizer"


def _type_of(x) -> str:
    return x.type_name if isinstance(x, Handle) else type(x).__name__


def _close(a, b, atol, rtol) -> bool:
    return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
            and bool(torch.allclose(a.double(), b.double(), atol=atol, rtol=rtol, equal_nan=False)))


def _cause(likely: dict, matches) -> str:
    for cause, value in (likely or {}).items():
        if value is not None and matches(value):
            return f"\n  likely cause: {cause}"
    return ""


def expect_float(got, expected: float, what: str, likely: dict, tol: float = 1e-9) -> None:
    """A Python float close to `expected`; names the likely mistake that gives `got`."""
    if isinstance(got, bool) or not isinstance(got, float | int):
        raise Mismatch(f"{what} should return a Python float, got {_type_of(got)}"
                       + ("\n  likely cause: a tensor returned; use float(...) or .item()"
                          if isinstance(got, torch.Tensor | Handle) else ""))
    got = float(got)
    if abs(got - expected) > tol * (1 + abs(expected)):
        raise Mismatch(f"{what} returned {fmt_number(got)}, expected {fmt_number(expected)}"
                       + _cause(likely, lambda v: abs(got - float(v)) <= tol * (1 + abs(v))))


# --- gd -------------------------------------------------------------------------------------


def gd_case(t, gd, H, c, x0, lr, num_steps, label):
    with t.case(label):
        grad_f = t.build("optimization.quadratic_grad", H, c)
        what = f"gd(grad_f, x0, lr={lr}, num_steps={num_steps})"
        got = t.call(gd, grad_f, x0, lr, num_steps, what=what, forbidden_python=[OPTIM])
        expected = t.ref("gd_quadratic", H, c, x0, lr, num_steps)
        likely = t.likely("gd_quadratic", H, c, x0, lr, num_steps)
        if isinstance(got, torch.Tensor) and got.dim() == 2 and got.shape[0] == num_steps:
            raise Mismatch(f"{what} returned {num_steps} rows, expected num_steps + 1 = "
                           f"{num_steps + 1}\n  likely cause: the trajectory should have "
                           "num_steps + 1 rows (row 0 is x0)")
        expect_tensor(got, expected, what=what, inputs={"x0": x0, "lr": lr},
                      likely={k: (lambda v=v: v) for k, v in likely.items() if v is not None},
                      atol=1e-9, rtol=1e-7)


@CHAPTER.visible("gd", points=1, d2l=("gd", "train_2d"))
def visible_gd(t, gd):
    H = torch.tensor([[1.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    c = torch.zeros(2, dtype=torch.float64)
    x0 = torch.tensor([2.0, 1.0], dtype=torch.float64)
    gd_case(t, gd, H, c, x0, 0.1, 5, "worked example: f(x) = (x1^2 + 4 x2^2) / 2, 5 steps")


# --- gd_contraction -------------------------------------------------------------------------


def contraction_case(t, fn, eigvals, lr, label):
    with t.case(label):
        what = f"gd_contraction({[round(float(e), 4) for e in eigvals]}, lr={lr})"
        got = t.call(fn, eigvals, lr, what=what)
        expect_float(got, t.ref("gd_contraction", eigvals, lr), what,
                     t.likely("gd_contraction", eigvals, lr),
                     tol=1e-6 if eigvals.dtype == torch.float32 else 1e-9)


@CHAPTER.visible("gd_contraction", points=1)
def visible_gd_contraction(t, gd_contraction):
    contraction_case(t, gd_contraction, torch.tensor([1.0, 4.0, 10.0]), 0.25,
                     "worked example: eigenvalues 1, 4, 10 and lr = 0.25 (diverges)")


# --- bisection_minimize (D2L 12.3, exercise 2: line search) ---------------------------------

DERIVATIVES = {"logexp": "f(x) = log(exp(x) + exp(-2x - 3))",
               "quadratic": "f(x) = s (x - m)^2", "smoothabs": "a smoothed |x - m| (steep)"}


def max_bisection_calls(a: float, b: float, tol: float) -> int:
    """What bisection needs: one call per halving of [a, b] down to tol, and two to spare."""
    return math.ceil(math.log2((b - a) / tol)) + 2


def bisection_case(t, fn, kind, params, a, b, tol, label):
    with t.case(label):
        df = t.build("optimization.derivative", kind, params)
        what = f"bisection_minimize(df, {a:g}, {b:g}, tol={tol:g}) with {DERIVATIVES[kind]}"
        got = t.call(fn, df, a, b, tol, what=what, forbidden_python=[OPTIM])
        expected = t.ref("convex_argmin", kind, params, a, b)
        likely = t.likely("bisection_minimize", kind, params, a, b, tol)
        if isinstance(got, bool) or not isinstance(got, float | int):
            raise Mismatch(f"{what} should return a Python float, got {_type_of(got)}"
                           + ("\n  likely cause: a tensor returned; use float(...) or .item()"
                              if isinstance(got, torch.Tensor | Handle) else ""))
        got = float(got)
        if not abs(got - expected) <= tol + 1e-12 * (1 + abs(expected)):
            raise Mismatch(f"{what} returned {fmt_number(got)}, expected a value within "
                           f"tol = {tol:g} of the minimiser {fmt_number(expected)} "
                           f"(off by {abs(got - expected):.3g})"
                           + _cause(likely, lambda v: abs(got - float(v)) <= tol))
        calls, limit = df.calls, max_bisection_calls(a, b, tol)
        if calls > limit:
            raise Mismatch(f"{what} called df {calls} times; halving the interval needs only "
                           f"about log2((b - a) / tol), at most {limit} calls here\n  likely "
                           "cause: each step must halve [a, b] (evaluate df once, at the "
                           "midpoint), not scan or shrink it by a fixed amount")


@CHAPTER.visible("bisection_minimize", points=1)
def visible_bisection_minimize(t, bisection_minimize):
    bisection_case(t, bisection_minimize, "logexp", [], -3.0, 3.0, 1e-6,
                   "worked example: D2L's log(exp(x) + exp(-2x - 3)) on [-3, 3], tol = 1e-6")


# --- the optimisers -------------------------------------------------------------------------


def _tolerance(inits) -> dict:
    if any(x.dtype == torch.float32 for x in inits):
        return {"atol": 2e-5, "rtol": 2e-4}
    return {"atol": 1e-10, "rtol": 1e-8}


def _same_run(a, b, tol) -> bool:
    if not isinstance(a, list) or len(a) != len(b):
        return False
    return all(isinstance(x, list) and len(x) == len(y)
               and all(_close(p, q, **tol) for p, q in zip(x, y)) for x, y in zip(a, b))


def make_optimizer(t, Cls, inits, kwargs, what, iterator=False):
    """The student's optimiser over fresh parameters (leaf tensors that require grad)."""
    params = t.build("optimization.params", inits)
    opt = t.call(lambda: params.method("construct_optimiser", Cls, iterator, kwargs), what=what,
                 forbidden_python=[OPTIM])
    if isinstance(opt, Handle) and opt.is_a(OPTIMIZER_BASE):
        raise Mismatch(f"{what} is a torch.optim.Optimizer: write the optimiser from scratch, "
                       "without torch.optim (not even as a base class)")
    return params, opt


def optimizer_case(t, Cls, kind, inits, grads, kwargs, label, *, iterator=False, weight=1.0):
    """Steps the student's optimiser with the gradients `grads` (one list per step, a tensor or
    None per parameter) and compares the parameters after every step with torch.optim's."""
    name = {"momentum": "SGDMomentum", "adagrad": "AdaGrad", "rmsprop": "RMSProp",
            "adam": "Adam"}[kind]
    with t.case(label, weight=weight):
        args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        what = f"{name}(params{', ' if args else ''}{args})"
        expected = t.ref(f"{kind}_run", inits, grads, kwargs)
        likely = t.likely(f"{kind}_run", inits, grads, kwargs)
        params, opt = make_optimizer(t, Cls, inits, kwargs, what, iterator)
        out = t.call(lambda: params.method("step_optimiser", opt, grads), what=f"{what}.step()",
                     forbidden_python=[OPTIM])
        if not isinstance(out, dict):
            raise Mismatch(f"stepping {what} failed")
        if out["recorded"]:
            raise Mismatch(f"after {what}.step() a parameter has a grad_fn: the update was "
                           "recorded by autograd\n  likely cause: update parameters inside "
                           "`with torch.no_grad():`")
        got, tol = out["values"], _tolerance(inits)
        shapes = [tuple(x.shape) for x in inits]
        for k, (g_step, e_step) in enumerate(zip(got, expected)):
            for j, (p, e) in enumerate(zip(g_step, e_step)):
                if _close(p, e, **tol):
                    continue
                unchanged = _close(p, inits[j].to(p.dtype), **tol) and not _close(e, inits[j],
                                                                                  **tol)
                hint = _cause(likely, lambda v: _same_run(got, v, tol))
                if not hint and unchanged:
                    hint = ("\n  likely cause: the parameters are not updated in place "
                            "(`p -= ...` or `p.sub_(...)` inside torch.no_grad(); "
                            "`p = p - ...` only rebinds a name)")
                raise Mismatch(f"{what}: after step {k + 1}, parameter {j} (shape {shapes[j]}) "
                               f"differs from torch.optim's: max |difference| "
                               f"{fmt_number((p.double() - e.double()).abs().max().item())}"
                               f" (steps were given gradients {describe_grads(grads, j)})"
                               + hint)
        if not out["same"]:
            raise Mismatch(f"{what}.step() replaced the parameter tensors")


def describe_grads(grads, j) -> str:
    kinds = {"None" if s[j] is None else ("zero" if not s[j].any() else "nonzero")
             for s in grads}
    return "/".join(sorted(kinds))


def zero_grad_case(t, Cls, inits, kwargs, label="zero_grad() sets every p.grad to None"):
    with t.case(label):
        what = "zero_grad()"
        params, opt = make_optimizer(t, Cls, inits, kwargs, "the optimiser")
        grads = [[torch.ones_like(x) for x in inits]]
        t.call(lambda: params.method("step_optimiser", opt, grads), what="step()",
               forbidden_python=[OPTIM])
        t.call(lambda: opt.method("zero_grad"), what=what, forbidden_python=[OPTIM])
        after = params.method("grads")
        if any(g is not None for g in after):
            zeros = all(g is None or not g.any() for g in after)
            raise Mismatch(f"after {what} some p.grad is not None"
                           + ("\n  likely cause: zero_grad should set p.grad to None, not to "
                              "zeros" if zeros else ""))


def visible_optimizer(t, Cls, kind, kwargs):
    inits = [torch.linspace(-1.0, 1.0, 3), torch.tensor([[0.5, -2.0], [1.5, 3.0]])]
    grads = [[torch.sin(torch.arange(3.0) + k), torch.cos(torch.arange(4.0).reshape(2, 2) * k)]
             for k in range(6)]
    optimizer_case(t, Cls, kind, inits, grads, kwargs,
                   "worked example: two float32 parameters, 6 steps, gradients that change sign")
    zero_grad_case(t, Cls, inits, kwargs)


@CHAPTER.visible("SGDMomentum", points=2, d2l=("sgd_momentum",))
def visible_SGDMomentum(t, SGDMomentum):
    visible_optimizer(t, SGDMomentum, "momentum", {"lr": 0.1, "momentum": 0.9})


@CHAPTER.visible("quadratic_minimum", points=1)
def visible_quadratic_minimum(t, quadratic_minimum):
    quadratic_case(t, quadratic_minimum, torch.tensor([[2.0, 0.0], [0.0, 8.0]], dtype=torch.float64),
                   torch.tensor([-2.0, 4.0], dtype=torch.float64), 1.0,
                   "worked example: Q = diag(2, 8), c = (-2, 4), b = 1")


@CHAPTER.visible("AdaGrad", points=2, d2l=("adagrad",))
def visible_AdaGrad(t, AdaGrad):
    visible_optimizer(t, AdaGrad, "adagrad", {"lr": 0.1})


@CHAPTER.visible("RMSProp", points=2, d2l=("rmsprop",))
def visible_RMSProp(t, RMSProp):
    visible_optimizer(t, RMSProp, "rmsprop", {"lr": 0.01, "alpha": 0.9})


@CHAPTER.visible("Adam", points=3, d2l=("adam",))
def visible_Adam(t, Adam):
    visible_optimizer(t, Adam, "adam", {"lr": 0.1})


# --- quadratic_minimum (D2L 12.6, exercise 3) -----------------------------------------------


def quadratic_case(t, fn, Q, c, b, label):
    with t.case(label):
        what = f"quadratic_minimum(Q, c, b) with Q {tuple(Q.shape)} {str(Q.dtype).split('.')[-1]}"
        got = t.call(fn, Q, c, b, what=what, forbidden_python=[OPTIM])
        x_ref, h_ref = t.ref("quadratic_minimum", Q, c, b)
        likely = t.likely("quadratic_minimum", Q, c, b)
        if not isinstance(got, tuple | list) or len(got) != 2:
            raise Mismatch(f"{what} should return a pair (x_star, h_min), got {_type_of(got)}"
                           + (f" of length {len(got)}" if isinstance(got, tuple | list) else ""))
        x, h = got
        f32 = Q.dtype == torch.float32
        expect_tensor(x, x_ref, what=f"x_star of {what}", inputs={"Q": Q, "c": c, "b": b},
                      atol=1e-4 if f32 else 1e-9, rtol=1e-4 if f32 else 1e-8,
                      likely={k: (lambda v=v: v[0]) for k, v in likely.items() if v is not None})
        expect_float(h, h_ref, f"h_min of {what}",
                     {k: v[1] for k, v in likely.items() if v is not None},
                     tol=1e-4 if f32 else 1e-9)


# --- cosine_lr ------------------------------------------------------------------------------


def cosine_case(t, fn, step, total, lr_max, lr_min, label):
    with t.case(label):
        what = f"cosine_lr({step}, {total}, lr_max={lr_max}, lr_min={lr_min})"
        got = t.call(fn, step, total, lr_max, lr_min, what=what)
        expect_float(got, t.ref("cosine_lr", step, total, lr_max, lr_min), what,
                     t.likely("cosine_lr", step, total, lr_max, lr_min))


@CHAPTER.visible("cosine_lr", points=1)
def visible_cosine_lr(t, cosine_lr):
    for step in (0, 25, 100):
        cosine_case(t, cosine_lr, step, 100, 0.5, 0.01,
                    f"worked example: step {step} of 100, from 0.5 down to 0.01")


# --- cosine_warmup_lr (D2L 12.11, the warm-up of its cosine scheduler) ------------------------


def warmup_case(t, fn, step, total, warmup, lr_max, lr_min, label):
    with t.case(label):
        what = f"cosine_warmup_lr({step}, {total}, {warmup}, lr_max={lr_max}, lr_min={lr_min})"
        got = t.call(fn, step, total, warmup, lr_max, lr_min, what=what)
        expect_float(got, t.ref("cosine_warmup_lr", step, total, warmup, lr_max, lr_min), what,
                     t.likely("cosine_warmup_lr", step, total, warmup, lr_max, lr_min))


@CHAPTER.visible("cosine_warmup_lr", points=1, d2l=("CosineScheduler",))
def visible_cosine_warmup_lr(t, cosine_warmup_lr):
    for step in (0, 5, 10, 55, 100):
        warmup_case(t, cosine_warmup_lr, step, 100, 10, 0.5, 0.01,
                    f"worked example: step {step} of 100, 10 warm-up steps, 0.5 down to 0.01")
