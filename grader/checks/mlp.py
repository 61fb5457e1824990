"""03_mlp: the visible checks (worked examples) of each exercise.

Public: this module ships to students. Reference values come from `t.ref`, and what likely
mistakes produce from `t.likely`; the references and the hidden checks are the instructor's
(`grader.chapters.mlp`). The helpers here are judge logic only (calls, shapes, statistics of
the student's output, messages); the instructor's hidden checks reuse them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from grader.cases import expect_stat, gen, randn
from grader.feedback import Mismatch, expect_pair, expect_tensor, fmt_value
from grader.registry import Chapter
from grader.remote import Handle, is_instance
from grader.runner import known_cause

CHAPTER = Chapter("03_mlp", "Multilayer perceptrons")

# --- shared pieces of the checks ---------------------------------------------------------

_T = torch.Tensor
ACTIVATIONS = {
    torch.relu: "torch.relu", _T.relu: "Tensor.relu", F.relu: "F.relu (or nn.ReLU)",
    torch.relu_: "torch.relu_", _T.relu_: "Tensor.relu_", F.relu6: "F.relu6",
    torch.sigmoid: "torch.sigmoid", _T.sigmoid: "Tensor.sigmoid (or F.sigmoid, nn.Sigmoid)",
    torch.special.expit: "torch.special.expit", F.logsigmoid: "F.logsigmoid",
    torch.tanh: "torch.tanh", _T.tanh: "Tensor.tanh (or F.tanh, nn.Tanh)",
    F.hardtanh: "F.hardtanh", F.leaky_relu: "F.leaky_relu",
    torch.prelu: "torch.prelu (F.prelu)", F.elu: "F.elu", F.silu: "F.silu", F.gelu: "F.gelu",
    F.softplus: "F.softplus",
}
NO_AUTOGRAD = {_T.backward: "Tensor.backward", torch.autograd.grad: "torch.autograd.grad",
               torch.autograd.backward: "torch.autograd.backward"}
GRAD_FORBIDDEN = {**ACTIVATIONS, **NO_AUTOGRAD}


def bounded_tol(dtype):
    """Results in [-1, 1] (or [0, 1]): a few units in the last place."""
    eps = torch.finfo(dtype).eps
    return {"atol": 4 * eps, "rtol": 1e-5 if dtype != torch.float64 else 1e-12}


def _with_cause(failure: Mismatch, cause: str) -> Mismatch:
    """The student's error with this exercise's cause in place of the generic one."""
    text = str(failure)
    generic = known_cause(text)
    if generic and text.endswith(generic):
        text = text[:-len(generic)]
    return Mismatch(f"{text}\n  likely cause: {cause}")


def _type_of(x) -> str:
    return x.type_name.rsplit(".", 1)[-1] if isinstance(x, Handle) else type(x).__name__


# --- elementwise functions: the activations, their derivatives, pReLU -----------------------


def elementwise(t, fn, X, forbidden, what=None, extra=(), tol=None):
    """Call fn(X, *extra) and compare with the reference `t.name` (computed in float64 and
    cast to X's dtype); `tol` (atol, rtol keywords) replaces `bounded_tol(X.dtype)`."""
    what = what or f"{t.name}(X)"
    expected = t.ref(t.name, X, *extra)
    likely = t.likely(t.name, X, *extra)
    got = t.call(fn, X, *extra, what=what, forbidden=forbidden)
    if isinstance(got, torch.Tensor) and got.dtype == torch.bool:
        raise Mismatch(f"{what} returned a boolean tensor, expected {X.dtype} (the input's "
                       "dtype).\n  likely cause: a comparison such as X > 0 is a mask of "
                       "booleans; convert it with .to(X.dtype)")
    expect_tensor(got, expected, what=what, inputs={"X": X}, likely=likely,
                  **(tol or bounded_tol(X.dtype)))


def _activation_visible(t, fn, forbidden):
    with t.case("worked example: X = [-3, -1, -0.5, 0, 0.5, 1, 3]"):
        elementwise(t, fn, torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0]), forbidden)
    with t.case("large inputs: X = [-1e4, -100, 100, 1e4] (float32)"):
        elementwise(t, fn, torch.tensor([-1e4, -100.0, 100.0, 1e4]), forbidden)


@CHAPTER.visible("relu", points=1)
def visible_relu(t, relu_):
    _activation_visible(t, relu_, ACTIVATIONS)


@CHAPTER.visible("sigmoid", points=1)
def visible_sigmoid(t, sigmoid_):
    _activation_visible(t, sigmoid_, ACTIVATIONS)


@CHAPTER.visible("tanh", points=1)
def visible_tanh(t, tanh_):
    _activation_visible(t, tanh_, ACTIVATIONS)


@CHAPTER.visible("relu_grad", points=1)
def visible_relu_grad(t, relu_grad_):
    _activation_visible(t, relu_grad_, GRAD_FORBIDDEN)


@CHAPTER.visible("sigmoid_grad", points=1)
def visible_sigmoid_grad(t, sigmoid_grad_):
    _activation_visible(t, sigmoid_grad_, GRAD_FORBIDDEN)


@CHAPTER.visible("tanh_grad", points=1)
def visible_tanh_grad(t, tanh_grad_):
    _activation_visible(t, tanh_grad_, GRAD_FORBIDDEN)


# --- init_mlp_params ---------------------------------------------------------------------


def params_list(out, what, n=4):
    if not isinstance(out, tuple | list) or len(out) != n:
        raise Mismatch(f"{what} should return a list [W1, b1, W2, b2], but returned "
                       + (f"{type(out).__name__} of length {len(out)}"
                          if isinstance(out, tuple | list) else fmt_value(out)))
    for name, p in zip(("W1", "b1", "W2", "b2"), out):
        if not isinstance(p, torch.Tensor):
            raise Mismatch(f"{name} of {what} should be a tensor, but is "
                           f"{_type_of(p) if isinstance(p, Handle) else fmt_value(p)}")
    return out


def init_case(t, init, num_inputs, num_hiddens, num_outputs, sigma, seed, default_sigma=False):
    """One call of init_mlp_params: shapes, dtype, leaves requiring grad, zero biases and the
    statistics of the weights (mean 0, standard deviation sigma, normal)."""
    if default_sigma:
        what = f"init_mlp_params({num_inputs}, {num_hiddens}, {num_outputs}, generator=g)"
        out = t.call(init, num_inputs, num_hiddens, num_outputs, generator=gen(seed), what=what)
    else:
        what = (f"init_mlp_params({num_inputs}, {num_hiddens}, {num_outputs}, sigma={sigma}, "
                "generator=g)")
        out = t.call(init, num_inputs, num_hiddens, num_outputs, sigma, gen(seed), what=what)
    params = params_list(out, what)
    shapes = {"W1": (num_inputs, num_hiddens), "b1": (num_hiddens,),
              "W2": (num_hiddens, num_outputs), "b2": (num_outputs,)}
    for (name, shape), p in zip(shapes.items(), params):
        if tuple(p.shape) != shape:
            hint = ""
            if tuple(p.shape) == shape[::-1] and len(shape) == 2:
                hint = (f"\n  likely cause: {name} is transposed; here X @ {name} multiplies "
                        f"examples in rows, so {name} is (fan_in, fan_out) (nn.Linear stores "
                        "the transpose)")
            elif len(shape) == 1 and p.numel() == shape[0]:
                hint = (f"\n  likely cause: {name} should be a vector of shape {shape}, e.g. "
                        f"torch.zeros({shape[0]})")
            raise Mismatch(f"{name} of {what} has shape {tuple(p.shape)}, expected {shape}"
                           + hint)
        if p.dtype != torch.float32:
            raise Mismatch(f"{name} of {what} has dtype {p.dtype}, expected torch.float32")
        if not p.requires_grad:
            raise Mismatch(f"{name} of {what} does not require grad\n  likely cause: create it "
                           "with requires_grad=True, or wrap it in nn.Parameter(...)")
        if not p.is_leaf:
            raise Mismatch(f"{name} of {what} is not a leaf tensor, so its .grad stays None "
                           "after backward()\n  likely cause: requires_grad=True was set "
                           "before multiplying by sigma; wrap the product in nn.Parameter(...) "
                           "or call .requires_grad_() on it")
    for name, b in (("b1", params[1]), ("b2", params[3])):
        if bool((b.detach() != 0).any()):
            raise Mismatch(f"the bias {name} of {what} is not zero: {fmt_value(b)}\n"
                           "  likely cause: biases start at zero (torch.zeros), only weights "
                           "are random")
    for name, W in (("W1", params[0]), ("W2", params[2])):
        w = W.detach().double().flatten()
        N = w.numel()
        expect_stat(w.mean().item(), 0.0, sigma / math.sqrt(N), f"the mean of the entries of "
                    f"{name}", "the weights should be centred at 0")
        expect_stat(w.std().item(), sigma, sigma / math.sqrt(2 * N),
                    f"the standard deviation of the entries of {name} (sigma = {sigma})",
                    "the weights should be sigma * N(0, 1): sigma is the standard deviation "
                    "(not the variance)")
        if N >= 1000:
            kurt = (((w - w.mean()) / w.std()) ** 4).mean().item()
            expect_stat(kurt, 3.0, math.sqrt(24 / N), f"the kurtosis of the entries of {name}",
                        "the weights should be normal (torch.randn), not uniform")
    return params


@CHAPTER.visible("init_mlp_params", points=2)
def visible_init_mlp_params(t, init):
    with t.case("784 inputs, 256 hidden units, 10 outputs, sigma = 0.01: shapes, leaves that "
                "require grad, zero biases, weights N(0, 0.01**2)", weight=2):
        init_case(t, init, 784, 256, 10, 0.01, 0)
    with t.case("all randomness comes from `generator`"):
        def flat(seed, rng_seed):
            t.build("seed_global", rng_seed)  # the kernel's global random state
            out = params_list(t.call(init, 20, 30, 5, 0.1, gen(seed),
                                     what="init_mlp_params(20, 30, 5, 0.1, generator=g)"),
                              "init_mlp_params(...)")
            return torch.cat([p.detach().flatten() for p in out])
        a, b, c = flat(7, 1), flat(7, 2), flat(8, 1)
        if not torch.equal(a, b):
            raise Mismatch("two calls with generators of the same seed gave different "
                           "parameters\n  likely cause: torch.randn called without "
                           "`generator=generator`, so it uses the global random state")
        if torch.equal(a, c):
            raise Mismatch("generators of different seeds gave the same parameters\n"
                           "  likely cause: the generator is not used, or re-seeded inside")


# --- mlp_forward -----------------------------------------------------------------------------


def forward_case(t, forward, X, params, tol):
    """mlp_forward(X, params) against the reference (float64, cast to X's dtype)."""
    what = f"mlp_forward(X {tuple(X.shape)}, params)"
    expected = t.ref("mlp_forward", X, params)
    likely = t.likely("mlp_forward", X, params)
    try:
        got = t.call(forward, X, params, what=what)
    except Mismatch as failure:
        if "mat1 and mat2" in str(failure) and X.dim() > 2:
            raise _with_cause(failure, f"X is not reshaped: images of shape {tuple(X.shape)} "
                              f"must become (-1, num_inputs) = (-1, {params[0].shape[0]}) "
                              "before X @ W1") from None
        raise
    if isinstance(got, torch.Tensor) and params[0].requires_grad and not got.requires_grad:
        raise Mismatch(f"{what}: the result does not depend on the parameters through autograd, "
                       "so training could not compute gradients\n  likely cause: .data, "
                       ".detach() or torch.no_grad() in the forward pass")
    expect_tensor(got, expected, what=what, inputs={"X": X}, likely=likely, **tol)


@CHAPTER.visible("mlp_forward", points=1)
def visible_mlp_forward(t, forward):
    W1 = torch.tensor([[1.0, -1.0, 0.5], [2.0, 0.0, -1.0], [0.0, 1.0, 1.0], [-1.0, 1.0, 0.0]])
    b1 = torch.tensor([0.0, -1.0, 0.5])
    W2 = torch.tensor([[1.0, 0.0], [-1.0, 2.0], [0.5, 1.0]])
    b2 = torch.tensor([0.1, -0.2])
    X = torch.tensor([[[[1.0, 2.0], [0.0, -1.0]]], [[[-2.0, 1.0], [3.0, 0.5]]]])
    params = [p.requires_grad_() for p in (W1, b1, W2, b2)]
    with t.case("worked example: X of shape (2, 1, 2, 2) (images), 4 inputs, 3 hidden, "
                "2 outputs"):
        forward_case(t, forward, X, params, dict(atol=1e-5, rtol=1e-5))


# --- collapse_linear ---------------------------------------------------------------------


def rand_params(d, h, q, seed, dtype, grad=True):
    """W1 (d, h), b1 (h,), W2 (h, q), b2 (q,) drawn from seeds seed ... seed + 3."""
    params = [randn(d, h, seed=seed, dtype=dtype), randn(h, seed=seed + 1, dtype=dtype),
              randn(h, q, seed=seed + 2, dtype=dtype), randn(q, seed=seed + 3, dtype=dtype)]
    return [p.requires_grad_(grad) for p in params]


def collapse_case(t, collapse, d, h, q, seed, dtype):
    W1, b1, W2, b2 = rand_params(d, h, q, seed, dtype, grad=False)
    X = randn(7, d, seed=seed + 9, dtype=dtype)
    W_ref, b_ref = t.ref("collapse_linear", W1, b1, W2, b2)
    likely_W = t.likely("collapse_linear_W", W1, b1, W2, b2)
    likely_b = t.likely("collapse_linear_b", W1, b1, W2, b2)
    two_layers = t.ref("two_layers", X, W1, b1, W2, b2)
    what = f"collapse_linear(W1 {(d, h)}, b1 {(h,)}, W2 {(h, q)}, b2 {(q,)})"
    try:
        out = t.call(collapse, W1, b1, W2, b2, what=what)
    except Mismatch as failure:
        if "must match the size of tensor" in str(failure):
            raise _with_cause(failure, "b1 + b2 adds vectors of different lengths; the first "
                              "bias passes through the second layer: b = b1 @ W2 + b2") \
                from None
        raise
    W, b = expect_pair(out, what, "W", "b")
    tol = dict(atol=1e-4 * h, rtol=1e-4) if dtype == torch.float32 else \
        dict(atol=1e-10 * h, rtol=1e-10)
    inputs = {"W1": W1, "b1": b1, "W2": W2, "b2": b2}
    expect_tensor(W, W_ref, what=f"W of {what}", inputs=inputs, likely=likely_W, **tol)
    if isinstance(b, torch.Tensor) and b.numel() == q and b.dim() == 2 and b.shape[0] == 1:
        b = b.reshape(q)  # a (1, q) bias broadcasts the same way
    expect_tensor(b, b_ref, what=f"b of {what}", inputs=inputs, likely=likely_b, **tol)
    expect_tensor(X @ W + b, two_layers, what="X @ W + b for a random X compared with the two "
                  "layers (X @ W1 + b1) @ W2 + b2", **tol)


@CHAPTER.visible("collapse_linear", points=2)
def visible_collapse_linear(t, collapse):
    with t.case("worked example: 2 inputs, 3 hidden units, 2 outputs"):
        collapse_case(t, collapse, 2, 3, 2, 0, torch.float32)


# --- make_mlp ------------------------------------------------------------------------------


def layer_name(entry: dict) -> str:
    """A layer described by the probe `mlp.layers`, as text: Linear(784, 256), ReLU, ..."""
    if entry.get("linear"):
        return f"Linear({entry.get('in_features')}, {entry.get('out_features')})"
    return str(entry.get("class"))


def make_case(t, make, num_inputs, num_hiddens, num_outputs, image_shape):
    """The layers of make_mlp(...) (read in the kernel by the probe `mlp.layers`), then one
    forward pass on a batch of 3 inputs of `image_shape`."""
    expected = t.ref("mlp_layers", num_inputs, num_hiddens, num_outputs)
    what = f"make_mlp({num_inputs}, {list(num_hiddens)}, {num_outputs})"
    net = t.call(make, num_inputs, num_hiddens, num_outputs, what=what)
    if not is_instance(net, nn.Sequential):
        raise Mismatch(f"{what} should return an nn.Sequential, but returned {_type_of(net)}")
    desc = t.build("mlp.layers", net)
    if type(desc) is not dict or "layers" not in desc:
        reason = desc.get("error") if type(desc) is dict else None
        raise Mismatch(f"{what}: its layers could not be read" + (f" ({reason})" if reason
                                                                    else ""))
    layers = desc["layers"]
    got = [layer_name(m) for m in layers]
    if got != expected:
        cause = None
        linears = [m for m in layers if m.get("linear")]
        if got and got[0] != "Flatten" and got == expected[1:]:
            cause = ("the Flatten layer is missing: images (n, 1, 28, 28) must be flattened to "
                     "(n, 784) before the first Linear")
        elif got[:-1] == expected and got[-1] != expected[-1]:
            cause = (f"an activation ({got[-1]}) after the last Linear: the output layer returns "
                     "raw logits (the loss applies softmax), so no activation after the last "
                     "Linear")
        elif any(g in ("Sigmoid", "Tanh", "LeakyReLU") for g in got):
            cause = "use nn.ReLU() as the activation of each hidden layer"
        elif len(linears) != len(expected) // 2:
            cause = (f"{len(linears)} Linear layers for {len(list(num_hiddens))} hidden widths: "
                     "one Linear and one ReLU for each width in the list num_hiddens, then the "
                     "output Linear")
        elif any(m.get("in_features") == num_inputs for m in linears[1:]):
            cause = ("in_features of each Linear must be the previous layer's out_features "
                     "(only the first takes num_inputs)")
        raise Mismatch(f"{what} has the layers\n    {', '.join(got)}\n  expected\n    "
                       f"{', '.join(expected)}" + (f"\n  likely cause: {cause}" if cause else ""))
    if any(m.get("linear") and not m.get("bias") for m in layers):
        raise Mismatch(f"{what}: a Linear layer has no bias (bias=False); keep the default")
    X = randn(3, *image_shape, seed=1, dtype=torch.float32)
    out = t.call(net, X, what=f"{what} on a batch X of shape {tuple(X.shape)}")
    if not isinstance(out, torch.Tensor):
        raise Mismatch(f"{what} maps X {tuple(X.shape)} to {_type_of(out)}, expected a tensor "
                       f"of shape {(3, num_outputs)}")
    if tuple(out.shape) != (3, num_outputs):
        raise Mismatch(f"{what} maps X {tuple(X.shape)} to shape {tuple(out.shape)}, expected "
                       f"{(3, num_outputs)}")


@CHAPTER.visible("make_mlp", points=2)
def visible_make_mlp(t, make):
    with t.case("worked example: make_mlp(784, [256], 10) on images (n, 1, 28, 28)"):
        make_case(t, make, 784, [256], 10, (1, 28, 28))


# --- D2L 5.1 exercises: pReLU and its derivative, tanh from the sigmoid ------------------


@CHAPTER.visible("prelu", points=1)
def visible_prelu(t, prelu_):
    with t.case("worked example: X = [-2, -0.5, 0, 0.5, 2], alpha = 0.25"):
        elementwise(t, prelu_, torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0]), ACTIVATIONS,
                    what="prelu(X, alpha=0.25)", extra=(0.25,))


@CHAPTER.visible("prelu_grad", points=1)
def visible_prelu_grad(t, prelu_grad_):
    with t.case("worked example: X = [-2, -0.5, 0, 0.5, 2], alpha = 0.25"):
        elementwise(t, prelu_grad_, torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0]), GRAD_FORBIDDEN,
                    what="prelu_grad(X, alpha=0.25)", extra=(0.25,))


def tanh_via_sigmoid_case(t, tvs, X, power=1):
    """tanh_via_sigmoid(X, f) with f = sigmoid ** power, built in the kernel (probe
    `mlp.recorder`, which counts its calls): power 1 is a sigmoid."""
    expected = t.ref("tanh_via_sigmoid", X, power)
    likely = t.likely("tanh_via_sigmoid", X, power)
    f = t.build("mlp.recorder", power)
    what = "tanh_via_sigmoid(X, sigmoid)"
    got = t.call(tvs, X, f, what=what, forbidden=ACTIVATIONS)
    if f.calls == 0:
        raise Mismatch(f"{what} never calls the sigmoid it is given\n  likely cause: "
                       "compute tanh from the argument `sigmoid` with the identity "
                       "tanh(x) = 2 * sigmoid(2x) - 1")
    expect_tensor(got, expected, what=what, inputs={"X": X}, likely=likely,
                  **bounded_tol(X.dtype))


@CHAPTER.visible("tanh_via_sigmoid", points=1)
def visible_tanh_via_sigmoid(t, tvs):
    with t.case("worked example: X = [-3, -1, 0, 1, 3] with a sigmoid"):
        tanh_via_sigmoid_case(t, tvs, torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0]))


# --- D2L 5.1 exercise 3: Swish and its derivative --------------------------------------------


def swish_tol(dtype):
    """Swish grows like x (relative error); its derivative is of size about 1, with a rounding
    error that grows with |beta x| (up to about 40) until the sigmoid saturates."""
    eps = torch.finfo(dtype).eps
    return {"atol": 64 * eps, "rtol": 1e-5 if dtype != torch.float64 else 1e-12}


def swish_case(t, fn, X, forbidden, beta=None):
    """swish(X, beta) or swish_grad(X, beta); beta None: called without it (the default)."""
    extra = () if beta is None else (beta,)
    what = f"{t.name}(X)" if beta is None else f"{t.name}(X, beta={beta:g})"
    elementwise(t, fn, X, forbidden, what=what, extra=extra, tol=swish_tol(X.dtype))


@CHAPTER.visible("swish", points=1)
def visible_swish(t, swish_):
    X = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0])
    with t.case("worked example: X = [-3, -1, -0.5, 0, 0.5, 1, 3], beta = 1 (the default)"):
        swish_case(t, swish_, X, ACTIVATIONS)
    with t.case("beta = 2, and large inputs X = [-1e4, -100, 100, 1e4] with beta = 0.5"):
        swish_case(t, swish_, X, ACTIVATIONS, 2.0)
        swish_case(t, swish_, torch.tensor([-1e4, -100.0, 100.0, 1e4]), ACTIVATIONS, 0.5)


@CHAPTER.visible("swish_grad", points=1)
def visible_swish_grad(t, swish_grad_):
    X = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0])
    with t.case("worked example: X = [-3, -1, -0.5, 0, 0.5, 1, 3], beta = 1 (the default)"):
        swish_case(t, swish_grad_, X, GRAD_FORBIDDEN)
    with t.case("beta = 2, and large inputs X = [-1e4, -100, 100, 1e4] with beta = 0.5"):
        swish_case(t, swish_grad_, X, GRAD_FORBIDDEN, 2.0)
        swish_case(t, swish_grad_, torch.tensor([-1e4, -100.0, 100.0, 1e4]), GRAD_FORBIDDEN,
                   0.5)
