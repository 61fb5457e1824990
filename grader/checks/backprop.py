"""07_backprop: the visible checks (worked examples) of each exercise.

Public: this module ships to students. Reference values (what autograd gives on the case's
inputs) come from `t.ref`, and what likely mistakes produce from `t.likely`; the references and
the hidden checks are the instructor's (`grader.chapters.backprop`). The student's layers are
objects in the notebook's kernel: the checks set their parameters (`layer.W = ...`) and call
their methods there. The functions `numerical_gradient` is given are built in the kernel too
(`grader.probes.backprop`).
"""

from __future__ import annotations

import torch

from grader.cases import gen, randn, tol
from grader.feedback import Mismatch, expect_pair, expect_tensor, fmt_value
from grader.registry import Chapter
from grader.remote import Handle

CHAPTER = Chapter("07_backprop", "Forward and backward propagation by hand")

# --- shared pieces of the checks -----------------------------------------------------------

NO_AUTOGRAD = {torch.Tensor.backward: "Tensor.backward", torch.autograd.grad: "torch.autograd.grad",
               torch.autograd.backward: "torch.autograd.backward",
               torch.Tensor.requires_grad_: "Tensor.requires_grad_"}


def make(t, cls, args, what):
    """An instance of the student's class (a handle), made in the kernel."""
    return t.call(cls, *args, what=what)


def method(obj, name, what):
    """The bound method `name` of the student's object (a handle to call with t.call)."""
    m = getattr(obj, name, None)
    if m is None or (m.is_callable is False if isinstance(m, Handle) else not callable(m)):
        raise Mismatch(f"{what} has no method `{name}`; the layer needs `{name}`")
    return m


def shape_hint(got, expected, what, transposed_cause):
    if isinstance(got, torch.Tensor) and isinstance(expected, torch.Tensor) \
            and got.dim() == 2 and tuple(got.shape) == tuple(expected.shape)[::-1] \
            and got.shape != expected.shape:
        raise Mismatch(f"{what} has shape {tuple(got.shape)}, expected {tuple(expected.shape)} "
                       "(denominator layout: a gradient has the shape of what it is the gradient "
                       f"with respect to)\n  likely cause: {transposed_cause}")


def dt(dtype):
    return str(dtype).replace("torch.", "")


def _attr(obj, name):
    """obj.name, or None when the student's object has no such attribute."""
    try:
        return getattr(obj, name, None)
    except AttributeError:
        return None


# --- Linear --------------------------------------------------------------------------------


def linear_layer(t, cls, i, o, seed):
    what = f"Linear({i}, {o}, generator=g)"
    layer = make(t, cls, (i, o, gen(seed)), what)
    for name, shape in (("W", (i, o)), ("b", (o,))):
        v = _attr(layer, name)
        if not isinstance(v, torch.Tensor):
            raise Mismatch(f"{what} should have an attribute `{name}` (a tensor of shape {shape}), "
                           f"but it is {fmt_value(v) if not isinstance(v, Handle) else repr(v)}")
        if tuple(v.shape) != shape:
            hint = ("\n  likely cause: W in nn.Linear's (out, in) layout; here W is "
                    "(in_features, out_features) so that forward is A @ W + b"
                    if name == "W" and tuple(v.shape) == (o, i) else "")
            raise Mismatch(f"{what}.{name} has shape {tuple(v.shape)}, expected {shape}{hint}")
    return layer


def linear_case(t, cls, n, i, o, dtype, seed):
    """forward and backward of Linear(i, o) on A (n, i), with W, b set by the check."""
    W, b = randn(i, o, seed=seed + 1, dtype=dtype), randn(o, seed=seed + 2, dtype=dtype)
    A, dLdZ = randn(n, i, seed=seed + 3, dtype=dtype), randn(n, o, seed=seed + 4, dtype=dtype)
    Z_ref, gA, gW, gb = t.ref("Linear.grads", A, W, b, dLdZ)
    likely = {part: t.likely(f"Linear.{part}", A, W, b, dLdZ)
              for part in ("Z", "dLdA", "dLdW", "dLdb")}
    layer = linear_layer(t, cls, i, o, seed)
    layer.W, layer.b = W.clone(), b.clone()
    label = f"Linear({i}, {o}) on A ({n}, {i}) {dt(dtype)}"
    k = tol(dtype, 10 * max(n, i, o))
    Z = t.call(method(layer, "forward", label), A, what=f"{label}: forward(A)",
               forbidden=NO_AUTOGRAD)
    expect_tensor(Z, Z_ref, what=f"{label}: forward(A)", inputs={"A": A, "W": W, "b": b},
                  likely=likely["Z"], **k)
    dLdA = t.call(method(layer, "backward", label), dLdZ, what=f"{label}: backward(dLdZ)",
                  forbidden=NO_AUTOGRAD)
    expect_tensor(dLdA, gA, what=f"dLdA returned by {label}: backward(dLdZ)",
                  inputs={"dLdZ": dLdZ, "W": W}, likely=likely["dLdA"], **k)
    for name, ref in (("dLdW", gW), ("dLdb", gb)):
        got = _attr(layer, name)
        if got is None:
            raise Mismatch(f"{label}: after backward, the layer has no attribute `{name}`\n"
                           f"  likely cause: backward should set self.{name}")
        if name == "dLdW":
            shape_hint(got, ref, f"{label}: dLdW", "transposed dLdW: dLdZ.T @ A instead of "
                       "A.T @ dLdZ")
        else:
            if isinstance(got, torch.Tensor) and tuple(got.shape) == (n, o) and n != 1:
                raise Mismatch(f"{label}: dLdb has shape {tuple(got.shape)}, expected ({o},)\n"
                               "  likely cause: dLdb is not summed over the batch (every example "
                               "adds its own contribution: dLdZ.sum(dim=0))")
            if isinstance(got, torch.Tensor) and tuple(got.shape) == (1, o):
                raise Mismatch(f"{label}: dLdb has shape (1, {o}), expected ({o},) (b's shape)\n"
                               "  likely cause: keepdim=True in the sum")
        expect_tensor(got, ref, what=f"{label}: {name} after backward(dLdZ)",
                      inputs={"A": A, "dLdZ": dLdZ}, likely=likely[name], **k)
    W_now, b_now = _attr(layer, "W"), _attr(layer, "b")
    if not (isinstance(W_now, torch.Tensor) and isinstance(b_now, torch.Tensor)
            and torch.equal(W_now, W) and torch.equal(b_now, b)):
        raise Mismatch(f"{label}: backward changed W or b; it should only compute gradients "
                       "(the optimiser updates the parameters)")


@CHAPTER.visible("Linear", points=3)
def visible_Linear(t, cls):
    with t.case("worked example: Linear(3, 2) on a batch of 4, float64", weight=2):
        linear_case(t, cls, 4, 3, 2, torch.float64, 0)


# --- activations ---------------------------------------------------------------------------


def act_case(t, name, cls, Z, G, label):
    """forward(Z) and backward(dLdA = G) of the activation layer `name`."""
    A_ref, gZ = t.ref(f"{name}.grads", Z, G)
    likely = t.likely(f"{name}.dLdZ", Z, G)
    what = f"{name}() on Z {tuple(Z.shape)} {dt(Z.dtype)} ({label})"
    layer = make(t, cls, (), f"{name}()")
    A = t.call(method(layer, "forward", what), Z, what=f"{what}: forward(Z)",
               forbidden=NO_AUTOGRAD)
    k = tol(Z.dtype, 10)
    expect_tensor(A, A_ref, what=f"{what}: forward(Z)", inputs={"Z": Z}, **k)
    dLdZ = t.call(method(layer, "backward", what), G, what=f"{what}: backward(dLdA)",
                  forbidden=NO_AUTOGRAD)
    expect_tensor(dLdZ, gZ, what=f"{what}: backward(dLdA)", inputs={"Z": Z, "dLdA": G},
                  likely=likely, **k)


ACT_Z = torch.tensor([[-2.0, -0.5, 0.5, 3.0], [1.0, -1.0, 2.0, -3.0], [0.25, 4.0, -0.1, 0.7]],
                     dtype=torch.float64)
ACT_G = torch.tensor([[1.0, 2.0, -1.0, 0.5], [0.3, -0.7, 1.5, 2.0], [-1.0, 1.0, 0.2, -2.5]],
                     dtype=torch.float64)


def act_visible(t, name, cls):
    with t.case("worked example: Z and dLdA of shape (3, 4), float64", weight=2):
        act_case(t, name, cls, ACT_Z, ACT_G, "worked example")


@CHAPTER.visible("ReLU", points=1)
def visible_ReLU(t, cls):
    act_visible(t, "ReLU", cls)


@CHAPTER.visible("Sigmoid", points=1)
def visible_Sigmoid(t, cls):
    act_visible(t, "Sigmoid", cls)


@CHAPTER.visible("Tanh", points=1)
def visible_Tanh(t, cls):
    act_visible(t, "Tanh", cls)


# --- SoftmaxCrossEntropy -------------------------------------------------------------------


def sce_case(t, cls, logits, y, label):
    """forward(logits, y) and backward() of the layer."""
    L_ref, g = t.ref("SoftmaxCrossEntropy.grads", logits, y)
    likely_L = t.likely("SoftmaxCrossEntropy.L", logits, y)
    likely_g = t.likely("SoftmaxCrossEntropy.dL", logits, y)
    what = f"SoftmaxCrossEntropy() on logits {tuple(logits.shape)} {dt(logits.dtype)} ({label})"
    layer = make(t, cls, (), "SoftmaxCrossEntropy()")
    k = tol(logits.dtype, 10 * float(logits.abs().max()))
    L = t.call(method(layer, "forward", what), logits, y, what=f"{what}: forward(logits, y)",
               forbidden=NO_AUTOGRAD)
    if isinstance(L, float | int) and not isinstance(L, bool):  # a Python number is fine
        L = torch.tensor(float(L), dtype=logits.dtype)
    expect_tensor(L, L_ref, what=f"{what}: forward(logits, y)", inputs={"logits": logits, "y": y},
                  likely=likely_L, **k)
    dL = t.call(method(layer, "backward", what), what=f"{what}: backward()",
                forbidden=NO_AUTOGRAD)
    expect_tensor(dL, g, what=f"{what}: backward()", inputs={"logits": logits, "y": y},
                  likely=likely_g, **k)


@CHAPTER.visible("SoftmaxCrossEntropy", points=2)
def visible_SoftmaxCrossEntropy(t, cls):
    logits = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, -1.0], [0.0, 0.0, 3.0], [1.0, -1.0, 0.0]],
                          dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    with t.case("worked example: 4 examples, 3 classes, float64", weight=2):
        sce_case(t, cls, logits, y, "worked example")


# --- mlp_l2_backward -----------------------------------------------------------------------


def mlp_case(t, fn, n, d, h, q, lambd, dtype, seed):
    X = randn(n, d, seed=seed, dtype=dtype)
    W1, W2 = randn(d, h, seed=seed + 1, dtype=dtype), randn(h, q, seed=seed + 2, dtype=dtype)
    y = torch.randint(0, q, (n,), generator=gen(seed + 3))
    g1, g2 = t.ref("mlp_l2_backward.grads", X, y, W1, W2, lambd)
    variants = t.likely("mlp_l2_backward", X, y, W1, W2, lambd)  # {cause: (dW1, dW2)}
    what = f"mlp_l2_backward(X ({n}, {d}), y, W1 ({d}, {h}), W2 ({h}, {q}), lambd={lambd})"
    out = t.call(fn, X, y, W1, W2, lambd, what=what, forbidden=NO_AUTOGRAD)
    expect_pair(out, what, "dJ/dW1", "dJ/dW2")
    k = tol(dtype, 10 * n)
    for idx, (name, got, ref) in enumerate((("dJ/dW1", out[0], g1), ("dJ/dW2", out[1], g2))):
        shape_hint(got, ref, f"{what}: {name}", "transposed: in the denominator layout "
                   f"{name} has the shape of {'W1' if idx == 0 else 'W2'}")
        expect_tensor(got, ref, what=f"{name} of {what}", inputs={"X": X, "y": y},
                      likely={c: v[idx] for c, v in variants.items() if type(v) is tuple}, **k)


@CHAPTER.visible("mlp_l2_backward", points=2)
def visible_mlp_l2_backward(t, fn):
    with t.case("worked example: X (4, 3), W1 (3, 5), W2 (5, 2), lambd = 0.1, float64",
                weight=2):
        mlp_case(t, fn, 4, 3, 5, 2, 0.1, torch.float64, 0)


# --- numerical_gradient --------------------------------------------------------------------


def ng_coef(x):
    """The coefficients c of the test function f(z) = sum(c * sin(2 z)) + 0.1 * sum(z**2)**2."""
    return randn(*x.shape, seed=7, dtype=x.dtype) if x.dim() else torch.tensor(1.3,
                                                                              dtype=x.dtype)


def ng_call(t, fn, kind, coef, x, h, what, returns_float=False, pass_h=True):
    """numerical_gradient(f, x[, h]) on a test function f made in the kernel; x must come back
    unchanged. Returns what the student's code returned."""
    f = t.build("backprop.test_function", kind, coef, tuple(x.shape), returns_float)
    x0 = x.clone()
    args = (f, x, h) if pass_h else (f, x)
    got = t.call(fn, *args, what=what, forbidden=NO_AUTOGRAD, may_modify=True)
    if not (x.shape == x0.shape and torch.allclose(x, x0, atol=1e-12, rtol=1e-12)):
        raise Mismatch(f"{what}: x was changed by the call: {fmt_value(x)} instead of "
                       f"{fmt_value(x0)}\n  likely cause: x left perturbed: restore x[i] to its "
                       "original value after evaluating f (or perturb a clone of x)")
    return got


def ng_case(t, fn, x, h, label, returns_float=False, pass_h=True):
    c = ng_coef(x)
    expected = t.ref("numerical_gradient.expected", "sin", c, x, h, returns_float)
    likely = t.likely("numerical_gradient.expected", "sin", c, x, h, returns_float)
    what = f"numerical_gradient(f, x {tuple(x.shape)}{f', h={h:g}' if pass_h else ''}) ({label})"
    got = ng_call(t, fn, "sin", c, x.clone(), h, what, returns_float, pass_h)
    expect_tensor(got, expected, what=what, inputs={"x": x}, likely=likely, atol=1e-7, rtol=1e-6)


@CHAPTER.visible("numerical_gradient", points=2)
def visible_numerical_gradient(t, fn):
    x = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -0.3]], dtype=torch.float64)
    with t.case("worked example: f(x) = sum(c * sin(2 x)) + 0.1 * sum(x**2)**2, x (2, 3)",
                weight=2):
        ng_case(t, fn, x, 1e-3, "worked example")
