"""07_backprop: the visible checks (worked examples) of each exercise.

Public: this module ships to students. Reference values (what autograd gives on the case's
inputs) come from `t.ref`, and what likely mistakes produce from `t.likely`; the references and
the hidden checks are the instructor's (`grader.chapters.backprop`). The student's layers are
objects in the notebook's kernel: the checks set their parameters (`layer.W = ...`) and call
their methods there. The functions `numerical_gradient` is given are built in the kernel too
(`grader.probes.backprop`).
"""

from __future__ import annotations

import math

import torch

from grader.cases import gen, randn, seed_of, tol
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


# --- mlp_l2_backward_bias (D2L 5.3, exercise 2) ---------------------------------------------


def mlp_bias_case(t, fn, n, d, h, q, lambd, dtype, seed):
    X = randn(n, d, seed=seed, dtype=dtype)
    W1, b1 = randn(d, h, seed=seed + 1, dtype=dtype), randn(h, seed=seed + 4, dtype=dtype)
    W2 = randn(h, q, seed=seed + 2, dtype=dtype)
    y = torch.randint(0, q, (n,), generator=gen(seed + 3))
    refs = t.ref("mlp_l2_backward_bias.grads", X, y, W1, b1, W2, lambd)
    variants = t.likely("mlp_l2_backward_bias", X, y, W1, b1, W2, lambd)  # {cause: triple}
    what = (f"mlp_l2_backward_bias(X ({n}, {d}), y, W1 ({d}, {h}), b1 ({h},), W2 ({h}, {q}), "
            f"lambd={lambd})")
    out = t.call(fn, X, y, W1, b1, W2, lambd, what=what, forbidden=NO_AUTOGRAD)
    if not isinstance(out, tuple | list) or len(out) != 3:
        raise Mismatch(f"{what} should return a triple (dJ/dW1, dJ/db1, dJ/dW2), but returned "
                       f"{fmt_value(out)}")
    k = tol(dtype, 10 * n)
    for idx, (name, shape_of) in enumerate((("dJ/dW1", "W1"), ("dJ/db1", "b1"),
                                            ("dJ/dW2", "W2"))):
        got, ref = out[idx], refs[idx]
        shape_hint(got, ref, f"{what}: {name}", "transposed: in the denominator layout "
                   f"{name} has the shape of {shape_of}")
        if name == "dJ/db1" and isinstance(got, torch.Tensor) and tuple(got.shape) == (n, h) \
                and n != 1:
            raise Mismatch(f"{what}: dJ/db1 has shape {tuple(got.shape)}, expected ({h},)\n"
                           "  likely cause: not summed over the examples (every example adds its "
                           "contribution: dZ.sum(dim=0))")
        expect_tensor(got, ref, what=f"{name} of {what}", inputs={"X": X, "y": y},
                      likely={c: v[idx] for c, v in variants.items() if type(v) is tuple}, **k)


@CHAPTER.visible("mlp_l2_backward_bias", points=1)
def visible_mlp_l2_backward_bias(t, fn):
    with t.case("worked example: X (4, 3), W1 (3, 5), b1 (5,), W2 (5, 2), lambd = 0.1, "
                "float64", weight=2):
        mlp_bias_case(t, fn, 4, 3, 5, 2, 0.1, torch.float64, 0)


# --- memory_footprint (D2L 5.3, exercise 3) -------------------------------------------------


def memory_case(t, fn, args, label):
    expected = t.ref("memory_footprint", *args)
    likely = t.likely("memory_footprint", *args)
    what = f"memory_footprint{tuple(args)}"
    with t.case(label):
        out = t.call(fn, *args, what=what)
        pred, train = expect_pair(out, what, "prediction", "training")
        for idx, (name, got) in enumerate((("prediction", pred), ("training", train))):
            if isinstance(got, torch.Tensor) and got.numel() == 1:
                got = got.item()
            if isinstance(got, float) and got == int(got):
                got = int(got)
            if not isinstance(got, int) or isinstance(got, bool):
                raise Mismatch(f"{what}: the {name} count should be an int (a number of floats), "
                               f"but is {fmt_value(got)}")
            if got != expected[idx]:
                cause = next((c for c, v in likely.items()
                              if isinstance(v, tuple) and v[idx] == got), None)
                raise Mismatch(f"{what}: {name} count {got}, expected {expected[idx]}"
                               + (f"\n  likely cause: {cause}" if cause else ""))


@CHAPTER.visible("memory_footprint", points=1)
def visible_memory_footprint(t, fn):
    memory_case(t, fn, (2, 3, 4, 5), "worked example: batch_size 2, 3 inputs, 4 hidden units, "
                "5 outputs")


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


# ============================================================================================
# Part 2: the library of CMU 11-785 HW1P1 (Identity, MSELoss, CrossEntropyLoss, BatchNorm1d,
# MLP, SGD). No autograd, and nothing of torch.nn or the library softmax functions.
# ============================================================================================

_T = torch.Tensor
LIBRARY_FORBIDDEN = {
    **NO_AUTOGRAD,
    torch.softmax: "torch.softmax", _T.softmax: "Tensor.softmax",
    torch.log_softmax: "torch.log_softmax", _T.log_softmax: "Tensor.log_softmax",
    torch.logsumexp: "torch.logsumexp", _T.logsumexp: "Tensor.logsumexp",
    torch.special.softmax: "torch.special.softmax",
    torch.special.log_softmax: "torch.special.log_softmax",
    torch.special.logsumexp: "torch.special.logsumexp",
    torch.batch_norm: "torch.batch_norm",
}
NO_TORCH_NN = [("torch.nn", None, "torch.nn")]


def lib_call(t, fn, *args, what):
    return t.call(fn, *args, what=what, forbidden=LIBRARY_FORBIDDEN, forbidden_python=NO_TORCH_NN)


def scalar_of(L, dtype):
    """A Python number returned for a loss is read as a 0-d tensor of the input's dtype."""
    if isinstance(L, float | int) and not isinstance(L, bool):
        return torch.tensor(float(L), dtype=dtype)
    return L


# --- Identity ------------------------------------------------------------------------------


def identity_case(t, cls, Z, G, label):
    A_ref, gZ = t.ref("Identity.grads", Z, G)
    likely = t.likely("Identity.dLdZ", Z, G)
    what = f"Identity() on Z {tuple(Z.shape)} {dt(Z.dtype)} ({label})"
    layer = make(t, cls, (), "Identity()")
    A = lib_call(t, method(layer, "forward", what), Z, what=f"{what}: forward(Z)")
    expect_tensor(A, A_ref, what=f"{what}: forward(Z)", inputs={"Z": Z}, atol=0, rtol=0)
    dLdZ = lib_call(t, method(layer, "backward", what), G, what=f"{what}: backward(dLdA)")
    expect_tensor(dLdZ, gZ, what=f"{what}: backward(dLdA)", inputs={"dLdA": G}, likely=likely,
                  atol=0, rtol=0)


@CHAPTER.visible("Identity", points=1)
def visible_Identity(t, cls):
    with t.case("worked example: Z and dLdA of shape (3, 4), float64", weight=2):
        identity_case(t, cls, ACT_Z, ACT_G, "worked example")


# --- MSELoss and CrossEntropyLoss ----------------------------------------------------------


def loss_case(t, name, cls, A, Y, label):
    """forward(A, Y) (a 0-d tensor) and backward() (dL/dA) of the loss class `name`."""
    L_ref, g = t.ref(f"{name}.grads", A, Y)
    likely_L = t.likely(f"{name}.L", A, Y)
    likely_g = t.likely(f"{name}.dLdA", A, Y)
    what = f"{name}() on A {tuple(A.shape)} {dt(A.dtype)} ({label})"
    layer = make(t, cls, (), f"{name}()")
    k = tol(A.dtype, 10 * max(1.0, float(A.abs().max())))
    L = lib_call(t, method(layer, "forward", what), A, Y, what=f"{what}: forward(A, Y)")
    expect_tensor(scalar_of(L, A.dtype), L_ref, what=f"{what}: forward(A, Y)",
                  inputs={"A": A, "Y": Y}, likely=likely_L, **k)
    dLdA = lib_call(t, method(layer, "backward", what), what=f"{what}: backward()")
    expect_tensor(dLdA, g, what=f"{what}: backward()", inputs={"A": A, "Y": Y},
                  likely=likely_g, **k)


MSE_A = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5], [0.0, 2.0, 1.0], [-1.0, 0.5, 0.25]],
                     dtype=torch.float64)
MSE_Y = torch.tensor([[1.0, -1.0, 0.0], [1.0, 1.0, -1.0], [0.5, 2.0, 0.0], [0.0, 0.0, 1.0]],
                     dtype=torch.float64)


@CHAPTER.visible("MSELoss", points=1)
def visible_MSELoss(t, cls):
    with t.case("worked example: A and Y of shape (4, 3), float64", weight=2):
        loss_case(t, "MSELoss", cls, MSE_A, MSE_Y, "worked example")


CE_A = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, -1.0], [0.0, 0.0, 3.0], [1.0, -1.0, 0.0]],
                    dtype=torch.float64)
CE_Y = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0]], dtype=torch.float64)


@CHAPTER.visible("CrossEntropyLoss", points=2)
def visible_CrossEntropyLoss(t, cls):
    with t.case("worked example: 4 examples, 3 classes, one-hot Y, float64", weight=2):
        loss_case(t, "CrossEntropyLoss", cls, CE_A, CE_Y, "worked example")


# --- BatchNorm1d ---------------------------------------------------------------------------

BN_STATE = ("BW", "Bb", "running_M", "running_V")


def bn_layer(t, cls, args, kwargs, what):
    layer = t.call(cls, *args, what=what, **kwargs)
    if not isinstance(layer, Handle):
        raise Mismatch(f"{what} should make a layer object, but gave {fmt_value(layer)}")
    return layer


def bn_attr(layer, name, what):
    v = _attr(layer, name)
    if not isinstance(v, torch.Tensor):
        raise Mismatch(f"{what} has no tensor attribute `{name}` (it is "
                       f"{fmt_value(v) if not isinstance(v, Handle) else repr(v)})")
    return v


def bn_constructor(t, cls, num_features):
    what = f"BatchNorm1d({num_features})"
    layer = bn_layer(t, cls, (num_features,), {}, what)
    for name, fill in (("BW", 1.0), ("Bb", 0.0), ("running_M", 0.0), ("running_V", 1.0)):
        v = bn_attr(layer, name, what)
        if tuple(v.shape) != (num_features,):
            raise Mismatch(f"{what}.{name} has shape {tuple(v.shape)}, expected "
                           f"({num_features},) (one value per feature)")
        if not torch.equal(v, torch.full_like(v, fill)):
            raise Mismatch(f"{what}.{name} should start as {'ones' if fill else 'zeros'}, "
                           f"but it is {fmt_value(v)}")


def bn_case(t, cls, Z, G, state, alpha, eps, label, weight=1.0):
    """A training forward(Z) and backward(G) of BatchNorm1d(d, alpha, eps) with BW, Bb and the
    running statistics set to `state`, then an eval forward on Z / 2 + 1 (`state` tensors: BW,
    Bb, running_M, running_V)."""
    n, d = Z.shape
    BW, Bb, rM, rV = state
    ref = t.ref("BatchNorm1d.train", Z, G, BW, Bb, rM, rV, alpha, eps)
    likely = t.likely("BatchNorm1d.train", Z, G, BW, Bb, rM, rV, alpha, eps)
    Z_eval = Z / 2 + 1
    ref_eval = t.ref("BatchNorm1d.eval", Z_eval, BW, Bb, ref["running_M"], ref["running_V"], eps)
    likely_eval = t.likely("BatchNorm1d.eval", Z_eval, BW, Bb, ref["running_M"],
                           ref["running_V"], eps)
    with t.case(label, weight=weight):
        what = f"BatchNorm1d({d}, alpha={alpha}, eps={eps}) on Z ({n}, {d}) {dt(Z.dtype)}"
        layer = bn_layer(t, cls, (d,), {"alpha": alpha, "eps": eps}, what)
        layer.BW, layer.Bb, layer.running_M, layer.running_V = (x.clone() for x in state)
        k = tol(Z.dtype, 100 * n)
        out = lib_call(t, method(layer, "forward", what), Z, what=f"{what}: forward(Z)")
        got = {"BZ": out}
        for name in ("running_M", "running_V"):
            got[name] = bn_attr(layer, name, f"{what}, after forward(Z),")
        dLdZ = lib_call(t, method(layer, "backward", what), G, what=f"{what}: backward(dLdBZ)")
        got["dLdZ"] = dLdZ
        for name in ("dLdBW", "dLdBb"):
            got[name] = _attr(layer, name)
            if got[name] is None:
                raise Mismatch(f"{what}: after backward, the layer has no attribute `{name}`\n"
                               f"  likely cause: backward should set self.{name}")
        for name, says in (("BZ", "forward(Z) in training"),
                           ("running_M", "running_M after a training forward(Z)"),
                           ("running_V", "running_V after a training forward(Z)"),
                           ("dLdZ", "dLdZ returned by backward(dLdBZ)"),
                           ("dLdBW", "dLdBW after backward(dLdBZ)"),
                           ("dLdBb", "dLdBb after backward(dLdBZ)")):
            cause = {c: v[name] for c, v in likely.items() if isinstance(v, dict)}
            expect_tensor(got[name], ref[name], what=f"{what}: {says}",
                          inputs={"Z": Z, "dLdBZ": G} if name.startswith("dLd") else {"Z": Z},
                          likely=cause, check_dtype=name not in ("running_M", "running_V"), **k)
    with t.case(f"{label}: then forward(Z / 2 + 1, eval=True)", weight=weight):
        what = f"BatchNorm1d({d}, alpha={alpha}, eps={eps}) on Z ({n}, {d}) {dt(Z.dtype)}"
        layer = bn_layer(t, cls, (d,), {"alpha": alpha, "eps": eps}, what)
        layer.BW, layer.Bb, layer.running_M, layer.running_V = (x.clone() for x in state)
        lib_call(t, method(layer, "forward", what), Z, what=f"{what}: forward(Z)")
        k = tol(Z.dtype, 100 * n)
        before = {name: bn_attr(layer, name, what) for name in BN_STATE}
        out = t.call(method(layer, "forward", what), Z_eval, eval=True,
                     what=f"{what}: forward(Z / 2 + 1, eval=True)", forbidden=LIBRARY_FORBIDDEN,
                     forbidden_python=NO_TORCH_NN)
        for name in BN_STATE:
            now = bn_attr(layer, name, what)
            if now.shape != before[name].shape or not torch.equal(now, before[name]):
                raise Mismatch(f"{what}: forward(..., eval=True) changed {name}\n  likely cause: "
                               "the running statistics are updated in eval mode too; evaluation "
                               "only reads them (update them only when eval=False)")
        expect_tensor(out, ref_eval, what=f"{what}: forward(Z / 2 + 1, eval=True) after the "
                      "training forward", inputs={"Z / 2 + 1": Z_eval}, likely=likely_eval, **k)


def bn_state(d, dtype, seed):
    return (1 + randn(d, seed=seed, dtype=dtype) / 2, randn(d, seed=seed + 1, dtype=dtype) / 2,
            randn(d, seed=seed + 2, dtype=dtype) / 2,
            0.5 + torch.rand(d, generator=gen(seed + 3), dtype=dtype))


@CHAPTER.visible("BatchNorm1d", points=3)
def visible_BatchNorm1d(t, cls):
    with t.case("worked example: BatchNorm1d(3) starts with BW ones, Bb zeros, running_M zeros, "
                "running_V ones"):
        bn_constructor(t, cls, 3)
    Z = torch.tensor([[1.0, 2.0, -1.0], [3.0, 0.0, 0.5], [-1.0, 1.0, 2.0], [2.0, -2.0, 0.0],
                      [0.5, 1.5, 1.0]], dtype=torch.float64)
    G = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5], [-1.5, 2.0, 1.0], [0.0, 1.0, 0.5],
                      [2.0, -0.5, -1.0]], dtype=torch.float64)
    state = (torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64),
             torch.tensor([0.0, -1.0, 0.5], dtype=torch.float64),
             torch.tensor([0.5, 0.0, -0.5], dtype=torch.float64),
             torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64))
    bn_case(t, cls, Z, G, state, 0.9, 0.01,
            "worked example: Z (5, 3), alpha = 0.9, eps = 0.01, float64", weight=2)


# --- MLP -----------------------------------------------------------------------------------


def mlp_layers(t, cls, sizes, seed):
    """The student's MLP(sizes, generator) and the description of its layers (checked)."""
    what = f"MLP({list(sizes)}, generator=g)"
    model = make(t, cls, (list(sizes), gen(seed)), what)
    info = t.build("backprop.describe_layers", model)
    if "error" in info:
        raise Mismatch(f"{what}: {info['error']}; the model needs an attribute `layers`, a list")
    layers = info["layers"]
    expected = []
    for i in range(len(sizes) - 1):
        expected.append(("Linear", (sizes[i], sizes[i + 1])))
        if i < len(sizes) - 2:
            expected.append(("ReLU", None))
    names = [entry["class"] for entry in layers]
    want = [name for name, _ in expected]
    if names != want:
        cause = ""
        if names == want + ["ReLU"]:
            cause = ("\n  likely cause: a ReLU after the last Linear; the last layer gives the "
                     "logits (nothing after the last Linear)")
        elif len(names) < len(want) and "ReLU" not in names:
            cause = "\n  likely cause: the ReLU layers between the Linear layers are missing"
        raise Mismatch(f"{what}.layers is [{', '.join(names)}], expected "
                       f"[{', '.join(want)}]{cause}")
    for k, (entry, (name, shape)) in enumerate(zip(layers, expected)):
        if name == "Linear" and (entry["W"] != shape or entry["b"] != (shape[1],)):
            raise Mismatch(f"{what}.layers[{k}] has W {entry['W']} and b {entry['b']}, expected "
                           f"W {shape} and b ({shape[1]},): Linear(sizes[i], sizes[i + 1])")
    relu_ids = [entry["id"] for entry in layers if entry["class"] == "ReLU"]
    if len(set(relu_ids)) != len(relu_ids):
        raise Mismatch(f"{what}.layers holds the same ReLU object several times\n  likely cause: "
                       "one ReLU instance shared by every hidden layer; each ReLU stores the Z "
                       "of its own forward, so each position needs its own ReLU()")
    return model, what


def mlp_params(sizes, dtype, seed):
    return [(randn(sizes[i], sizes[i + 1], seed=seed + 2 * i, dtype=dtype) / 2,
             randn(sizes[i + 1], seed=seed + 2 * i + 1, dtype=dtype) / 2)
            for i in range(len(sizes) - 1)]


def mlp_forward_backward(t, cls, sizes, n, dtype, seed, label):
    params = mlp_params(sizes, dtype, seed)
    A = randn(n, sizes[0], seed=seed + 50, dtype=dtype)
    G = randn(n, sizes[-1], seed=seed + 51, dtype=dtype)
    ref = t.ref("MLP.grads", params, A, G)
    likely = t.likely("MLP.grads", params, A, G)
    model, what = mlp_layers(t, cls, sizes, seed)
    access = t.build("backprop.layer_access", model)
    access.method("set_params", params)
    label = f"MLP({list(sizes)}) on A ({n}, {sizes[0]}) {dt(dtype)} ({label})"
    k = tol(dtype, 100 * max(sizes))
    out = lib_call(t, method(model, "forward", label), A, what=f"{label}: forward(A)")
    expect_tensor(out, ref["out"], what=f"{label}: forward(A)", inputs={"A": A},
                  likely={c: v["out"] for c, v in likely.items() if isinstance(v, dict)}, **k)
    dLdA = lib_call(t, method(model, "backward", label), G, what=f"{label}: backward(dLdZ)")
    grads = access.method("grads")
    for i, ((gW, gb), (rW, rb)) in enumerate(zip(grads, ref["grads"])):
        for name, got, want in (("dLdW", gW, rW), ("dLdb", gb, rb)):
            if got is None:
                raise Mismatch(f"{label}: after backward, Linear layer {i} has no `{name}`\n"
                               "  likely cause: backward does not run through every layer")
            expect_tensor(got, want, what=f"{label}: {name} of Linear layer {i} after "
                          "backward(dLdZ)", **k)
    expect_tensor(dLdA, ref["dLdA"], what=f"dLdA returned by {label}: backward(dLdZ)",
                  inputs={"dLdZ": G}, **k)


@CHAPTER.visible("MLP", points=2)
def visible_MLP(t, cls):
    with t.case("worked example: MLP([4, 5, 6, 3]): its layers"):
        mlp_layers(t, cls, (4, 5, 6, 3), 0)
    with t.case("worked example: MLP([4, 5, 6, 3]) on A (3, 4), float64", weight=2):
        mlp_forward_backward(t, cls, (4, 5, 6, 3), 3, torch.float64, 0, "worked example")


# --- SGD -----------------------------------------------------------------------------------


def sgd_case(t, cls, spec, grads, lr, momentum, label, weight=1.0):
    """The student's SGD over a model of `spec` built in the kernel, stepped once per entry of
    `grads`; the parameters after every step are compared with the reference run."""
    expected = t.ref("SGD.run", spec, grads, lr, momentum)
    likely = t.likely("SGD.run", spec, grads, lr, momentum)
    with t.case(label, weight=weight):
        what = f"SGD(model, lr={lr}, momentum={momentum})"
        model = t.build("backprop.sgd_model", spec)
        opt = t.call(lambda: model.method("make", cls, (lr,), {"momentum": momentum}),
                     what=what, forbidden=LIBRARY_FORBIDDEN, forbidden_python=NO_TORCH_NN)
        out = t.call(lambda: model.method("run", opt, grads), what=f"{what}.step()",
                     forbidden=LIBRARY_FORBIDDEN, forbidden_python=NO_TORCH_NN)
        k = tol(next(v for _, ts in spec for v in ts.values()).dtype, 10)
        names = [f"layers[{i}].{p}" for i, (_, tensors) in enumerate(spec) for p in
                 ("W", "b", "BW", "Bb") if p in tensors]
        for s, (got_step, want_step) in enumerate(zip(out["values"], expected)):
            for name, got, want in zip(names, got_step, want_step):
                cause = {c: v[s][names.index(name)] for c, v in likely.items()
                         if isinstance(v, list)}
                expect_tensor(got, want, what=f"{what}: {name} after step {s + 1} of "
                              f"{len(expected)}", likely=cause, **k)
        if not out["same"]:
            raise Mismatch(f"{what}.step() replaced the parameter tensors by new ones\n  likely "
                           "cause: `layer.W = layer.W - lr * v` makes a new tensor; update in place "
                           "(`layer.W -= lr * v`), so that every reference to the parameter sees "
                           "the update")


def sgd_spec(dtype, seed, bn=True):
    """A model Linear(3, 2), ReLU, [BatchNorm1d(2),] Linear(2, 2)."""
    spec = [("Linear", {"W": randn(3, 2, seed=seed, dtype=dtype),
                        "b": randn(2, seed=seed + 1, dtype=dtype)}), ("ReLU", {})]
    if bn:
        spec.append(("BatchNorm1d", {"BW": 1 + randn(2, seed=seed + 2, dtype=dtype) / 4,
                                     "Bb": randn(2, seed=seed + 3, dtype=dtype) / 4}))
    spec.append(("Linear", {"W": randn(2, 2, seed=seed + 4, dtype=dtype),
                            "b": randn(2, seed=seed + 5, dtype=dtype)}))
    return spec


def sgd_grads(spec, steps, seed):
    out = []
    for s in range(steps):
        step = []
        for i, (_, tensors) in enumerate(spec):
            step.append({name: randn(*v.shape, seed=seed + 100 * s + 10 * i + j, dtype=v.dtype)
                         for j, (name, v) in enumerate(tensors.items())})
        out.append(step)
    return out


@CHAPTER.visible("SGD", points=2)
def visible_SGD(t, cls):
    spec = sgd_spec(torch.float64, 0)
    sgd_case(t, cls, spec, sgd_grads(spec, 3, 10), 0.1, 0.9,
             "worked example: Linear, ReLU, BatchNorm1d, Linear; 3 steps, lr 0.1, momentum 0.9",
             weight=2)


# --- fit_classifier ------------------------------------------------------------------------

FIT_LAYERS = ["Linear", "BatchNorm1d", "ReLU", "Linear"]
FIT_SHAPES = {0: (784, 128), 3: (128, 10)}
CHANCE = 0.3  # accuracies below this are about what guessing gets (10 classes)


def fit_call(t, fn, X, y, batch_size, num_epochs, lr, momentum, seed, what):
    """fit_classifier(train_iter, num_epochs, lr, momentum, generator=g, on_epoch=recorder) on a
    loader of (X, y) made in the kernel; returns (net handle, losses, on_epoch records)."""
    loader = t.build("tensor_loader", X, y, batch_size, True, seed_of(seed) % 2**31)
    recorder = t.build("backprop.epoch_recorder")
    try:
        out = t.call(fn, loader, num_epochs, lr, momentum, what=what, forbidden=LIBRARY_FORBIDDEN,
                     forbidden_python=NO_TORCH_NN, generator=gen(seed), on_epoch=recorder)
    except Mismatch as exc:
        if "has no attribute" in str(exc):
            raise Mismatch(f"{exc}\n  likely cause: a step out of order: every step is "
                           "net.forward(X) (a training forward, eval=False), loss.forward, "
                           "net.backward(loss.backward()), then optimizer.step(); a backward needs "
                           "the training forward before it, and step() the gradients that "
                           "net.backward leaves") from None
        raise
    net, losses = expect_pair(out, what, "net", "losses")
    return net, losses, recorder.method("records")


def fit_structure(t, net, what):
    """The layers of the returned net (handles), checked: Linear(784, 128), BatchNorm1d(128),
    ReLU, Linear(128, 10)."""
    info = t.build("backprop.describe_layers", net)
    if "error" in info:
        raise Mismatch(f"{what}: the first value returned should be the trained network (your "
                       f"MLP, with an attribute `layers`), but: {info['error']}")
    names = [entry["class"] for entry in info["layers"]]
    if names != FIT_LAYERS:
        cause = ""
        if sorted(names) == sorted(FIT_LAYERS):
            cause = ("\n  likely cause: BatchNorm1d at the wrong place; insert it right after the "
                     "first Linear: net.layers.insert(1, BatchNorm1d(128))")
        elif "BatchNorm1d" not in names:
            cause = ("\n  likely cause: the BatchNorm1d(128) layer is missing; insert it after the "
                     "first Linear: net.layers.insert(1, BatchNorm1d(128))")
        raise Mismatch(f"{what}: net.layers is [{', '.join(names)}], expected "
                       f"[{', '.join(FIT_LAYERS)}] (MLP([784, 128, 10]) with BatchNorm1d(128) "
                       f"inserted after the first Linear){cause}")
    for k, shape in FIT_SHAPES.items():
        entry = info["layers"][k]
        if entry["W"] != shape or entry["b"] != (shape[1],):
            raise Mismatch(f"{what}: net.layers[{k}] has W {entry['W']} and b {entry['b']}, "
                           f"expected W {shape} and b ({shape[1]},): the network is "
                           "MLP([784, 128, 10])")
    layers = net.layers
    bw = _attr(layers[1], "BW")
    if not isinstance(bw, torch.Tensor) or tuple(bw.shape) != (128,):
        raise Mismatch(f"{what}: net.layers[1].BW should be a tensor of shape (128,) "
                       "(BatchNorm1d(128))")
    return layers


def fit_predict(t, layers, X, what):
    """The logits of the returned net on X, layer by layer, BatchNorm1d with eval=True."""
    A = X.reshape(len(X), -1)
    for k, (layer, name) in enumerate(zip(layers, FIT_LAYERS)):
        label = f"{what}: net.layers[{k}].forward" + (" with eval=True" if k == 1 else "")
        kwargs = {"eval": True} if name == "BatchNorm1d" else {}
        A = t.call(method(layer, "forward", label), A, what=label, forbidden=LIBRARY_FORBIDDEN,
                   forbidden_python=NO_TORCH_NN, **kwargs)
        if not isinstance(A, torch.Tensor):
            raise Mismatch(f"{label} returned {fmt_value(A)}, not a tensor")
    if A.shape != (len(X), 10):
        raise Mismatch(f"{what}: the network's output on {len(X)} images has shape "
                       f"{tuple(A.shape)}, expected ({len(X)}, 10)")
    return A


def fit_losses(losses, num_epochs, what):
    """The returned losses as floats: one finite number per epoch."""
    if isinstance(losses, torch.Tensor):
        losses = losses.reshape(-1).tolist()
    if not isinstance(losses, list | tuple) or len(losses) != num_epochs:
        raise Mismatch(f"{what}: the second value returned should be the list of the "
                       f"{num_epochs} mean training losses (one per epoch), but it is "
                       f"{fmt_value(losses)}")
    out = []
    for v in losses:
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if not isinstance(v, float | int) or isinstance(v, bool):
            raise Mismatch(f"{what}: the losses should be numbers (a float per epoch), but one "
                           f"is {fmt_value(v)}")
        out.append(float(v))
    return out


def fit_outcome(t, layers, losses, X_test, y_test, bound, reached, what):
    """Accuracy of the returned net on held-out images, computed here; with the diagnostics
    of the usual failures. `reached`: what the reference reaches, in words."""
    logits = fit_predict(t, layers, X_test, what)
    bn = layers[1]
    stats = {name: _attr(bn, name) for name in ("BW", "Bb", "running_M", "running_V")}
    untouched = (isinstance(stats["BW"], torch.Tensor) and isinstance(stats["Bb"], torch.Tensor)
                 and bool((stats["BW"] == 1).all()) and bool((stats["Bb"] == 0).all()))
    if not torch.isfinite(logits).all() or not all(map(math.isfinite, losses)):
        raise Mismatch(f"{what}: the network's outputs or the losses contain NaN or inf "
                       f"(losses per epoch: {fmt_value(losses)}): training diverged\n  likely "
                       "cause: a learning rate far too large (use lr as given) or an update with "
                       "the wrong sign")
    rM, rV = stats["running_M"], stats["running_V"]
    if isinstance(rM, torch.Tensor) and isinstance(rV, torch.Tensor) \
            and bool((rM == 0).all()) and bool((rV == 1).all()):
        raise Mismatch(f"{what}: the BatchNorm1d layer's running statistics were never updated "
                       "(running_M is still zeros and running_V ones), so evaluation normalises "
                       "with them as if every feature had mean 0 and variance 1\n  likely cause: "
                       "the network was not trained with the BatchNorm1d layer in it in training "
                       "mode: insert it before training, and train with net.forward(X) "
                       "(eval=False)")
    if not losses[-1] < losses[0] * (1 - 1e-3):
        raise Mismatch(f"{what}: the mean training loss did not go down: "
                       f"{fmt_value(losses)} per epoch\n  likely cause: the parameters are "
                       "never updated: call optimizer.step() after net.backward(loss.backward()) "
                       "in every step" + (" (BatchNorm1d's BW and Bb are still ones and zeros)"
                                          if untouched else ""))
    acc = float((logits.argmax(dim=1) == y_test).to(torch.float64).mean())
    if acc < bound:
        if acc < CHANCE:
            cause = ("the network is about as good as guessing one of the 10 classes (10%): "
                     "it did not learn; check that every step runs forward, loss, backward and "
                     "optimizer.step() on the minibatch of that step, with the labels of that "
                     "minibatch as one-hot rows")
        else:
            cause = ("the network learns, but too little: lr, momentum and num_epochs are not "
                     "used as given (e.g. lr divided by the batch size: the 1/n is already in "
                     "CrossEntropyLoss's gradient), or the labels do not match the images")
        if untouched:
            cause += "; BatchNorm1d's BW and Bb never changed (optimizer.step() is not called?)"
        raise Mismatch(f"{what}: accuracy {acc:.3f} on {len(y_test)} held-out images, below the "
                       f"bound {bound} ({reached})\n  likely cause: {cause}")
    return acc


def fit_on_epoch(records, losses, num_epochs, what):
    """on_epoch was called once per epoch, with the epochs 1, 2, ... and that epoch's loss."""
    epochs = [r[0] for r in records]
    if epochs != list(range(1, num_epochs + 1)):
        raise Mismatch(f"{what}: on_epoch was called with the epochs {fmt_value(epochs)}, "
                       f"expected {list(range(1, num_epochs + 1))} (on_epoch(epoch, net, loss) "
                       "once at the end of every epoch, counting from 1)")
    for r, loss in zip(records, losses):
        if r[1] is None or not math.isclose(r[1], loss, rel_tol=1e-5, abs_tol=1e-7):
            raise Mismatch(f"{what}: on_epoch got the loss {fmt_value(r[1])} at epoch {r[0]}, "
                           f"but the losses returned say {loss:.6g}: pass the epoch's mean "
                           "training loss")
        if not r[2]:
            raise Mismatch(f"{what}: on_epoch was called with net=None; pass the network")


def fit_toy_data():
    """A small fixed image set: 10 classes, each a random pattern of bright pixels plus noise;
    120 training and 60 held-out images of shape (1, 28, 28)."""
    protos = (torch.rand(10, 1, 28, 28, generator=gen(70)) < 0.3).to(torch.float32)

    def draw(n, seed):
        y = torch.arange(n) % 10
        noise = torch.rand(n, 1, 28, 28, generator=gen(seed))
        return (0.6 * protos[y] + 0.4 * noise).clamp(0, 1), y
    X, y = draw(120, 71)
    X_test, y_test = draw(60, 72)
    return X, y, X_test, y_test


FIT_TOY = dict(batch_size=20, num_epochs=3, lr=0.05, momentum=0.9, seed=73)
FIT_TOY_BOUND = 0.9


@CHAPTER.visible("fit_classifier", points=2)
def visible_fit_classifier(t, fn):
    X, y, X_test, y_test = fit_toy_data()
    c = FIT_TOY
    reached = t.ref("fit_classifier.accuracy", X, y, X_test, y_test, c["batch_size"],
                    c["num_epochs"], c["lr"], c["momentum"], c["seed"])
    what = (f"fit_classifier(train_iter, {c['num_epochs']}, {c['lr']}, {c['momentum']}, "
            f"generator=g, on_epoch=...) on 120 toy images (10 classes) in batches of "
            f"{c['batch_size']}")
    with t.case("worked example: the network, its losses and its accuracy on 60 held-out toy "
                f"images (at least {FIT_TOY_BOUND})", weight=2):
        net, losses, records = fit_call(t, fn, X, y, c["batch_size"], c["num_epochs"], c["lr"],
                                        c["momentum"], c["seed"], what)
        layers = fit_structure(t, net, what)
        losses = fit_losses(losses, c["num_epochs"], what)
        fit_on_epoch(records, losses, c["num_epochs"], what)
        fit_outcome(t, layers, losses, X_test, y_test, FIT_TOY_BOUND,
                    f"the reference reaches {reached:.3f}", what)
