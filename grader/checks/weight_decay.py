"""04_weight_decay: the visible checks (worked examples) of each exercise.

Public: this module ships to students. Reference values come from `t.ref`, and what likely
mistakes produce from `t.likely`; the references and the hidden checks are the instructor's
(`grader.chapters.weight_decay`). The helpers here are judge logic only (calls, shapes,
comparisons, messages); the instructor's hidden checks (and chapter 08's `get_k_fold_data`,
which has `k_fold_split`'s contract) reuse them. The nets `weight_decay_sgd` is given are built
in the student's kernel by `grader.probes.weight_decay`.
"""

from __future__ import annotations

import numbers

import torch
from torch import nn

from grader.cases import randn, tol
from grader.feedback import Mismatch, expect_pair, expect_tensor, fmt_number, fmt_value, type_name
from grader.probes.weight_decay import make_net
from grader.registry import Chapter
from grader.remote import Handle, is_instance

CHAPTER = Chapter("04_weight_decay", "Model selection, under/overfitting, weight decay")

# --- shared pieces of the checks ---------------------------------------------------------


def _type_of(x) -> str:
    return x.type_name if isinstance(x, Handle) else type_name(x)


def same(a, b) -> bool:
    return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
            and torch.allclose(a.detach().double(), b.detach().double(), rtol=1e-5, atol=1e-7))


def named_variant(got, expected, likely: dict):
    """The first likely mistake whose output equals `got` (shapes included) but not `expected`."""
    for cause, alt in (likely or {}).items():
        if same(got, alt) and not same(alt, expected):
            return cause
    return None


def compare(got, expected, what, inputs, likely, **tolerance):
    """expect_tensor, but a likely mistake is named even when the shapes differ."""
    cause = named_variant(got, expected, likely) if isinstance(got, torch.Tensor) else None
    if cause and not same(got, expected):
        head = ("returned wrong values" if got.shape == expected.shape else
                f"returned shape {tuple(got.shape)}, expected {tuple(expected.shape)}")
        raise Mismatch(f"{what} {head}.\n  expected: {fmt_value(expected)}\n  received: "
                       f"{fmt_value(got)}\n  likely cause: {cause}")
    expect_tensor(got, expected, what=what, inputs=inputs, likely=likely, **tolerance)


# --- polynomial_features ------------------------------------------------------------------


def poly_case(t, fn, x, degree, expected, likely, **tolerance):
    what = f"polynomial_features(x {tuple(x.shape)} {str(x.dtype)[6:]}, degree={degree})"
    got = t.call(fn, x, degree, what=what)
    compare(got, expected, what, {"x": x, "degree": degree}, likely,
            **(tolerance or {"atol": 1e-6, "rtol": 1e-5}))


@CHAPTER.visible("polynomial_features", points=2)
def visible_polynomial_features(t, fn):
    x = torch.tensor([0.0, 1.0, 2.0, -1.0])
    with t.case("worked example: x = [0, 1, 2, -1], degree 3"):
        poly_case(t, fn, x, 3, t.ref("polynomial_features", x, 3),
                  t.likely("polynomial_features", x, 3))


# --- k_fold_split (also 08's get_k_fold_data) -----------------------------------------------

FOLD_PARTS = ("X_train", "y_train", "X_valid", "y_valid")


def fold_case(t, fn, k, i, X, y, expected, likely):
    """`expected` the four parts; `likely` {cause: the four parts that mistake returns}."""
    what = f"{t.name}({k}, {i}, X {tuple(X.shape)}, y {tuple(y.shape)})"
    out = t.call(fn, k, i, X, y, what=what)
    if not isinstance(out, tuple | list) or len(out) != 4:
        raise Mismatch(f"{what} should return a tuple (X_train, y_train, X_valid, y_valid), but "
                       f"returned {_type_of(out)}"
                       + (f" of length {len(out)}" if isinstance(out, tuple | list) else ""))
    for j, name in enumerate(FOLD_PARTS):
        per_part = {c: v[j] for c, v in (likely or {}).items()
                    if isinstance(v, tuple | list) and len(v) == 4}
        compare(out[j], expected[j], f"{name} of {what}", None, per_part, atol=0, rtol=0)


def indexed(n, d, dtype, seed):
    """Rows that show where they came from: column 0 is the row index."""
    X = torch.cat([torch.arange(n, dtype=dtype).reshape(-1, 1),
                   randn(n, d - 1, seed=seed, dtype=dtype)], dim=1)
    return X, (100 + torch.arange(n, dtype=dtype)).reshape(-1, 1)


@CHAPTER.visible("k_fold_split", points=2, d2l=("get_k_fold_data",))
def visible_k_fold_split(t, fn):
    X, y = indexed(12, 2, torch.float32, 0)
    with t.case("worked example: 12 examples, k = 4, fold i = 1 is validation"):
        fold_case(t, fn, 4, 1, X, y, t.ref("k_fold_split", 4, 1, X, y),
                  t.likely("k_fold_split", 4, 1, X, y))


# --- l2_penalty, l1_penalty -----------------------------------------------------------------

PENALTY_EXAMPLE = [[1.0, -2.0], [0.5, 3.0]]


def penalty_case(t, fn, w, expected, likely, **tolerance):
    t.expect(fn, dict(w=w), expected, likely=likely, **tolerance)


def penalty_grad_case(t, fn, w, expected_grad, what):
    """fn(w) back-propagated in the kernel (probe `weight_decay.grad_probe`): differentiable,
    a scalar, and its gradient with respect to w is `expected_grad`."""
    probe = t.build("weight_decay.grad_probe", fn)
    report = t.call(probe, w, what=what)
    if not isinstance(report, dict):
        raise Mismatch(f"{what} could not be back-propagated")
    if not report.get("differentiable"):
        shown = "" if report.get("tensor") else f" (it returned {report.get('type')})"
        raise Mismatch(f"{what} is not differentiable with respect to w (its result has no "
                       f"grad_fn){shown}, so it cannot be added to the loss and trained\n  likely "
                       "cause: the penalty was computed outside autograd (.item(), float(), "
                       "NumPy, .detach() or torch.no_grad())")
    shape = tuple(report.get("shape") or ())
    if shape and any(s != 1 for s in shape):
        raise Mismatch(f"{what} should be a scalar, but has shape {shape}")
    expect_tensor(report.get("grad"), expected_grad,
                  what=f"the gradient of {what} with respect to w", **tol(w.dtype, 10))


@CHAPTER.visible("l2_penalty", points=1, d2l=("l2_penalty",))
def visible_l2_penalty(t, fn):
    w = torch.tensor(PENALTY_EXAMPLE)
    with t.case(f"worked example: w = {PENALTY_EXAMPLE}"):
        penalty_case(t, fn, w, t.ref("l2_penalty", w), t.likely("l2_penalty", w))


@CHAPTER.visible("l1_penalty", points=1)
def visible_l1_penalty(t, fn):
    w = torch.tensor(PENALTY_EXAMPLE)
    with t.case(f"worked example: w = {PENALTY_EXAMPLE}"):
        penalty_case(t, fn, w, t.ref("l1_penalty", w), t.likely("l1_penalty", w))


# --- weight_decay_sgd -------------------------------------------------------------------------

# The key of t.likely("weight_decay_sgd_steps", ...): what SGD(net.parameters(),
# weight_decay=wd) leaves in the parameters (every parameter decayed).
EVERY_PARAMETER_DECAYED = "every parameter decayed"


def wd_grads(params: dict, seed: int) -> dict:
    """Known gradients for a step: one standard normal tensor per parameter."""
    return {n: randn(*p.shape, seed=seed + j, dtype=p.dtype) for j, (n, p) in
            enumerate(params.items())}


def _prefix(name: str) -> str:
    return f"{name}." if name else ""


def _missing_cause(net: nn.Module, held: set) -> str:
    linears = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    first_name, first = linears[0]
    first_params = {_prefix(first_name) + n for n, _ in first.named_parameters()}
    if held == {_prefix(first_name) + "weight"}:
        return ("only the first layer's weight was passed (net[0].weight), so the bias and "
                "every other parameter stay at their initial values; the optimizer must hold "
                "all of net's parameters, in two groups")
    if held == first_params:
        return ("only the first layer's parameters were passed (net[0].weight, net[0].bias): "
                "that works for one nn.Linear only; collect the weights of every nn.Linear")
    in_linear = {_prefix(mn) + n for mn, m in linears for n, _ in m.named_parameters()}
    if in_linear <= held:
        return ("parameters that belong to no nn.Linear (BatchNorm, Embedding, a module's own "
                "nn.Parameter) are left out: they must be trained too, just not decayed; put "
                "every parameter of net.parameters() that is not a Linear weight in the second "
                "group")
    return ("layers inside nested modules are missed (net.children() lists the top level only): "
            "go through net.modules() or net.named_parameters()")


def wd_case(t, fn, kind, params, lr, wd, grads, label, expected, likely):
    """weight_decay_sgd on the net `kind` (built in the kernel with `params`), then two steps of
    the optimizer it returns: every gradient zero (only decay moves a parameter), then `grads`.
    `expected` {"zero": values, "known": values} after each step; `likely` {cause: the same for
    that mistake}."""
    what = f"weight_decay_sgd(net, lr={lr}, wd={wd}) for {label}"
    local = make_net(kind)  # the structure only: names and types of the layers
    net = t.build("weight_decay.net", kind, params)
    probe = t.build("weight_decay.sgd_probe", net)
    opt = t.call(fn, net, lr, wd, what=what)
    if not is_instance(opt, torch.optim.SGD):
        raise Mismatch(f"{what} should return a torch.optim.SGD, but returned {_type_of(opt)}"
                       + ("\n  likely cause: the function has no `return` statement"
                          if opt is None else ""))
    info = probe.method("describe", opt)
    for n, p in params.items():
        if not torch.equal(info["params"][n], p):
            raise Mismatch(f"{what} changed net's parameter `{n}`; it should only build the "
                           "optimizer")
    held = [n for g in info["groups"] for n in g["names"]]
    missing = [n for n in params if n not in held]
    if missing:
        raise Mismatch(f"{what}: the optimizer does not hold "
                       f"{', '.join(f'`{n}`' for n in missing)}, so "
                       f"{'it is' if len(missing) == 1 else 'they are'} never trained\n"
                       f"  likely cause: {_missing_cause(local, set(held) - {None})}")
    if None in held:
        raise Mismatch(f"{what}: the optimizer holds tensors that are not net's parameters")
    lrs = sorted({g["lr"] for g in info["groups"] if g["names"]}, key=lambda v: (v is None, v))
    if lrs != [lr]:
        raise Mismatch(f"{what}: the optimizer's learning rate is {', '.join(map(str, lrs))}, "
                       f"expected lr = {lr}\n  likely cause: lr not passed to torch.optim.SGD")
    # Step 1, every gradient zero: only the decay moves a parameter.
    zeros = {n: torch.zeros_like(g) for n, g in grads.items()}
    after = probe.method("step", opt, zeros)
    every = (likely or {}).get(EVERY_PARAMETER_DECAYED) or {}
    for n, before in params.items():
        got, exp = after[n], expected["zero"][n]
        tolerance = tol(before.dtype, 10)
        if torch.allclose(got, exp, **tolerance):
            continue
        decayed = not torch.equal(exp, before)
        cause = None
        if not decayed and "zero" in every and torch.allclose(got, every["zero"][n], **tolerance):
            cause = ("biases are decayed: only the weights of nn.Linear layers should be "
                     "(a bias only shifts a unit's output)" if n.endswith("bias") else
                     f"`{n}` is not the weight of an nn.Linear layer, but it was decayed "
                     "(select the weights by module type, isinstance(m, nn.Linear), not by "
                     "name or shape)")
        elif decayed and torch.allclose(got, before, **tolerance):
            cause = f"`{n}`, the weight of an nn.Linear layer, is not decayed (weight_decay=wd " \
                    "in its parameter group)"
        elif decayed:
            ratio = (got.double() / before.double()).median().item()
            factor = (exp.double() / before.double()).median().item()
            cause = (f"the weights were multiplied by {fmt_number(ratio)} in a step with zero "
                     f"gradient, expected {fmt_number(factor)}: the weight decay is "
                     f"{fmt_number((1 - ratio) / lr)} instead of wd = {wd}")
        raise Mismatch(f"{what}: after opt.step() with every gradient zero, `{n}` is wrong\n"
                       f"  expected: {fmt_value(exp)}\n  received: {fmt_value(got)}"
                       + (f"\n  likely cause: {cause}" if cause else ""))
    # Step 2, known gradients.
    final = probe.method("step", opt, grads)
    momentum = any(g.get("momentum") for g in info["groups"])
    for n in params:
        got = final[n]
        cause = None
        if momentum:
            cause = "the optimizer uses momentum; plain SGD (momentum=0) is asked for"
        elif torch.allclose(got, after[n], **tol(got.dtype, 10)):
            cause = f"`{n}` did not move although its gradient is not zero"
        expect_tensor(got, expected["known"][n], what=f"`{n}` after a step with known gradients "
                      f"of {what}", likely={cause: got} if cause else None, **tol(got.dtype, 10))


@CHAPTER.visible("weight_decay_sgd", points=3)
def visible_weight_decay_sgd(t, fn):
    params = {"0.weight": torch.tensor([[1.0, -2.0]]), "0.bias": torch.tensor([0.5])}
    grads = wd_grads(params, 900)
    with t.case("worked example: nn.Sequential(nn.Linear(2, 1)), lr = 0.1, wd = 0.5"):
        wd_case(t, fn, "one_linear", params, 0.1, 0.5, grads, "one nn.Linear(2, 1)",
                t.ref("weight_decay_sgd_steps", "one_linear", params, 0.1, 0.5, grads),
                t.likely("weight_decay_sgd_steps", "one_linear", params, 0.1, 0.5, grads))


# --- early_stopping ---------------------------------------------------------------------------


def _losses_text(val_losses) -> str:
    shown = ", ".join(f"{v:g}" for v in val_losses[:12])
    return f"[{shown}{', ...' if len(val_losses) > 12 else ''}] ({len(val_losses)} epochs)"


def _epoch(v):
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return int(v)
    if isinstance(v, torch.Tensor) and v.numel() == 1 and not v.is_floating_point() \
            and v.dtype != torch.bool:
        return int(v.item())
    return None


def early_stopping_case(t, fn, val_losses, patience, min_delta, expected, likely):
    """early_stopping(val_losses, patience[, min_delta]) == expected, (stop, best) epochs.
    `min_delta=None` leaves it at its default."""
    args = (list(val_losses), patience) + (() if min_delta is None else (min_delta,))
    shown = "" if min_delta is None else f", min_delta={min_delta:g}"
    what = f"early_stopping(val_losses, patience={patience}{shown})"
    got = t.call(fn, *args, what=what)
    pair = expect_pair(got, what, "stop_epoch", "best_epoch")
    epochs = tuple(_epoch(v) for v in pair)
    if None in epochs:
        bad = pair[epochs.index(None)]
        raise Mismatch(f"{what} should return two ints (stop_epoch, best_epoch), but returned "
                       f"{fmt_value(bad) if isinstance(bad, torch.Tensor) else _type_of(bad)} "
                       f"for {('stop_epoch', 'best_epoch')[epochs.index(None)]}")
    expected = tuple(expected)
    if epochs == expected:
        return
    causes = [c for c, v in (likely or {}).items()
              if isinstance(v, tuple | list) and tuple(v) == epochs and tuple(v) != expected]
    raise Mismatch(f"{what} returned (stop_epoch, best_epoch) = {epochs}, expected {expected}."
                   f"\n  input val_losses: {_losses_text(val_losses)}"
                   + (f"\n  likely cause: {causes[0]}" if causes else "")
                   + (f"\n  or: {causes[1]}" if len(causes) > 1 else ""))


EARLY_STOPPING_EXAMPLE = ([1.21, 1.13, 0.90, 0.68, 0.65, 0.62, 0.46, 0.50, 0.43, 0.45], 2, 0.035)


@CHAPTER.visible("early_stopping", points=2)
def visible_early_stopping(t, fn):
    losses, patience, min_delta = EARLY_STOPPING_EXAMPLE
    with t.case(f"worked example: val_losses = {losses}, patience = {patience}, min_delta = "
                f"{min_delta}"):
        early_stopping_case(t, fn, losses, patience, min_delta,
                            t.ref("early_stopping", losses, patience, min_delta),
                            t.likely("early_stopping", losses, patience, min_delta))


# --- frobenius_sq (D2L 3.7, exercise 4) -----------------------------------------------------

NO_NORM = {torch.norm: "torch.norm", torch.linalg.norm: "torch.linalg.norm",
           torch.linalg.matrix_norm: "torch.linalg.matrix_norm",
           torch.linalg.vector_norm: "torch.linalg.vector_norm", torch.Tensor.norm: "Tensor.norm"}

FROBENIUS_EXAMPLE = [[1.0, -2.0, 0.5], [3.0, 1.0, -1.0]]


def frobenius_case(t, fn, W, expected, likely, **tolerance):
    """frobenius_sq(W) against `expected`, computed from scratch (no norm function)."""
    t.expect(fn, dict(W=W), expected, what=f"frobenius_sq(W {tuple(W.shape)} "
             f"{str(W.dtype)[6:]})", likely=likely, forbidden=NO_NORM,
             **(tolerance or tol(W.dtype, 10)))


@CHAPTER.visible("frobenius_sq", points=1)
def visible_frobenius_sq(t, fn):
    W = torch.tensor(FROBENIUS_EXAMPLE)
    with t.case(f"worked example: W = {FROBENIUS_EXAMPLE}"):
        frobenius_case(t, fn, W, t.ref("frobenius_sq", W), t.likely("frobenius_sq", W))
    with t.case("a square W = [[1, 2], [3, 4]] (not symmetric): the gradient is 2 W"):
        W = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
        frobenius_case(t, fn, W, t.ref("frobenius_sq", W), t.likely("frobenius_sq", W))
        penalty_grad_case(t, fn, W, t.ref("_frobenius_grad", W), "frobenius_sq(W (2, 2))")


# --- prior_to_weight_decay (D2L 3.7, exercise 6) ----------------------------------------------


def prior_case(t, fn, sigma_w, sigma_noise, n, expected, likely):
    """prior_to_weight_decay(sigma_w, sigma_noise, n): a Python float equal to `expected`."""
    what = f"prior_to_weight_decay(sigma_w={sigma_w}, sigma_noise={sigma_noise}, n={n})"
    got = t.call(fn, sigma_w, sigma_noise, n, what=what)
    if isinstance(got, Handle) or not isinstance(got, float | int) or isinstance(got, bool):
        raise Mismatch(f"{what} should return a Python float, but returned {_type_of(got)}"
                       + ("\n  likely cause: the function has no `return` statement"
                          if got is None else
                          "\n  likely cause: a tensor; return float(...)"
                          if isinstance(got, torch.Tensor) else ""))
    if abs(got - expected) <= 1e-9 * abs(expected) + 1e-15:
        return
    cause = next((c for c, v in (likely or {}).items() if isinstance(v, float)
                  and abs(got - v) <= 1e-9 * abs(v) + 1e-15
                  and abs(v - expected) > 1e-9 * abs(expected)), None)
    raise Mismatch(f"{what} is {fmt_number(float(got))}, expected {fmt_number(expected)} (the "
                   "lambda of the objective mean_i (y_i - y_hat_i)^2 / 2 + lambda / 2 ||w||^2)"
                   + (f"\n  likely cause: {cause}" if cause else ""))


@CHAPTER.visible("prior_to_weight_decay", points=1)
def visible_prior_to_weight_decay(t, fn):
    with t.case("worked example: sigma_w = 2, sigma_noise = 0.5, n = 10"):
        prior_case(t, fn, 2.0, 0.5, 10, t.ref("prior_to_weight_decay", 2.0, 0.5, 10),
                   t.likely("prior_to_weight_decay", 2.0, 0.5, 10))
