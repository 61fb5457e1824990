"""03_mlp: multilayer perceptrons (D2L 5.1-5.2).

Reference implementations first, then one check per exercise. Activations and their
derivatives are checked on ordinary inputs and on inputs up to +-1e4, where formulas with
exp(x) overflow; references compute in float64.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from grader.cases import DTYPES, expect_stat, gen, randn
from grader.feedback import Mismatch, expect_pair, expect_tensor, fmt_value
from grader.registry import Chapter

CHAPTER = Chapter("03_mlp", "Multilayer perceptrons")

# --- references ---------------------------------------------------------------------------


def relu(X):
    return torch.maximum(X, torch.zeros_like(X))


def sigmoid(X):
    # exp of a non-positive number only: never overflows
    e = torch.exp(-X.abs())
    return torch.where(X >= 0, 1 / (1 + e), e / (1 + e))


def tanh(X):
    e = torch.exp(-2 * X.abs())
    return torch.sign(X) * (1 - e) / (1 + e)


def relu_grad(X):
    return (X > 0).to(X.dtype)


def sigmoid_grad(X):
    s = sigmoid(X)
    return s * (1 - s)


def tanh_grad(X):
    return 1 - tanh(X) ** 2


def init_mlp_params(num_inputs, num_hiddens, num_outputs, sigma=0.01, generator=None):
    W1 = nn.Parameter(torch.randn(num_inputs, num_hiddens, generator=generator) * sigma)
    b1 = nn.Parameter(torch.zeros(num_hiddens))
    W2 = nn.Parameter(torch.randn(num_hiddens, num_outputs, generator=generator) * sigma)
    b2 = nn.Parameter(torch.zeros(num_outputs))
    return [W1, b1, W2, b2]


def mlp_forward(X, params):
    W1, b1, W2, b2 = params
    X = X.reshape(-1, W1.shape[0])
    return relu(X @ W1 + b1) @ W2 + b2


def collapse_linear(W1, b1, W2, b2):
    return W1 @ W2, b1 @ W2 + b2


def make_mlp(num_inputs, num_hiddens, num_outputs):
    layers, width = [nn.Flatten()], num_inputs
    for h in num_hiddens:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_outputs))
    return nn.Sequential(*layers)


def prelu(X, alpha):
    return relu(X) + alpha * torch.minimum(X, torch.zeros_like(X))


def prelu_grad(X, alpha):
    return torch.where(X > 0, torch.ones_like(X), torch.full_like(X, alpha))


def tanh_via_sigmoid(X, sigmoid):
    return 2 * sigmoid(2 * X) - 1


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


def _bounded_tol(dtype):
    """Results in [-1, 1] (or [0, 1]): a few units in the last place."""
    eps = torch.finfo(dtype).eps
    return {"atol": 4 * eps, "rtol": 1e-5 if dtype != torch.float64 else 1e-12}


EXTREMES = [-1e4, -1000.0, -100.0, -50.0, -20.0, -1e-8, -0.0, 0.0, 1e-8, 20.0, 50.0, 100.0,
            1000.0, 1e4]


def _inputs():
    """(label, X) pairs for the hidden checks of elementwise functions."""
    shapes = ((5, 3), (4, 4), (2, 3, 4), (100,))
    for i, (shape, dtype) in enumerate(itertools.product(shapes, DTYPES)):
        yield f"X of shape {shape}, {dtype}", randn(*shape, seed=i, dtype=dtype, scale=3.0)
    for dtype in DTYPES:
        yield (f"extreme inputs -1e4 ... 1e4, {dtype}",
               torch.tensor(EXTREMES, dtype=dtype).reshape(2, 7))
    yield "a grid from -10 to 10 (float64)", torch.linspace(-10, 10, 201, dtype=torch.float64)


def _elementwise(t, fn, X, ref_fn, likely, forbidden, what=None, extra=()):
    """Call fn(X, *extra), compare with ref_fn in float64 cast to X's dtype."""
    what = what or f"{t.name}(X)"
    got = t.call(fn, X, *extra, what=what, forbidden=forbidden)
    if isinstance(got, torch.Tensor) and got.dtype == torch.bool:
        raise Mismatch(f"{what} returned a boolean tensor, expected {X.dtype} (the input's "
                       "dtype).\n  likely cause: a comparison such as X > 0 is a mask of "
                       "booleans; convert it with .to(X.dtype)")
    expected = ref_fn(X.double(), *extra).to(X.dtype)
    buggy = {c: (lambda f=f: f(X.clone(), *extra)) for c, f in likely.items()}
    expect_tensor(got, expected, what=what, inputs={"X": X}, likely=buggy,
                  **_bounded_tol(X.dtype))


def _activation_check(t, fn, ref_fn, likely, forbidden, extra=()):
    with t.case("worked example: X = [-3, -1, -0.5, 0, 0.5, 1, 3]"):
        _elementwise(t, fn, torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0]), ref_fn, likely,
                     forbidden, extra=extra)
    with t.case("large inputs: X = [-1e4, -100, 100, 1e4] (float32)"):
        _elementwise(t, fn, torch.tensor([-1e4, -100.0, 100.0, 1e4]), ref_fn, likely, forbidden,
                     extra=extra)
    if not t.hidden:
        return
    for label, X in _inputs():
        with t.case(label, weight=2 if "extreme" in label else 1):
            _elementwise(t, fn, X, ref_fn, likely, forbidden, extra=extra)


def _naive_sigmoid_pos(X):
    return torch.exp(X) / (1 + torch.exp(X))


def _naive_tanh(X):
    return (torch.exp(X) - torch.exp(-X)) / (torch.exp(X) + torch.exp(-X))


def _d2l_tanh(X):
    return (1 - torch.exp(-2 * X)) / (1 + torch.exp(-2 * X))


# --- the activations ---------------------------------------------------------------------


@CHAPTER.exercise("relu", points=1)
def check_relu(t, relu_):
    likely = {
        "the absolute value instead of max(x, 0)": torch.abs,
        "the negative part min(x, 0) instead of the positive part": lambda X: torch.minimum(
            X, torch.zeros_like(X)),
        "a leaky ReLU (a small slope for negative inputs); ReLU is exactly 0 there":
            lambda X: torch.where(X > 0, X, 0.01 * X),
    }
    _activation_check(t, relu_, relu, likely, ACTIVATIONS)


@CHAPTER.exercise("sigmoid", points=1)
def check_sigmoid(t, sigmoid_):
    likely = {
        "exp(x) / (1 + exp(x)) overflows for large x (inf / inf = NaN): use 1 / (1 + exp(-x)), "
        "or exp of -|x| only": _naive_sigmoid_pos,
        "exp(-x) / (1 + exp(-x)) overflows for very negative x (inf / inf = NaN)":
            lambda X: torch.exp(-X) / (1 + torch.exp(-X)),
        "the sign in the exponent: 1 / (1 + exp(x)) is sigmoid(-x)":
            lambda X: 1 / (1 + torch.exp(X)),
    }
    _activation_check(t, sigmoid_, sigmoid, likely, ACTIVATIONS)


@CHAPTER.exercise("tanh", points=1)
def check_tanh(t, tanh_):
    likely = {
        "(exp(x) - exp(-x)) / (exp(x) + exp(-x)) overflows (inf / inf = NaN) already for "
        "|x| near 100 in float32: use exp of a non-positive number only, e.g. 2 * sigmoid(2x) "
        "- 1 with a stable sigmoid, or sign(x) * (1 - exp(-2|x|)) / (1 + exp(-2|x|))":
            _naive_tanh,
        "(1 - exp(-2x)) / (1 + exp(-2x)) overflows for very negative x (inf / inf = NaN): "
        "use |x| and the sign, or 2 * sigmoid(2x) - 1": _d2l_tanh,
        "2 * sigmoid(x) - 1 is tanh(x / 2): the identity is tanh(x) = 2 * sigmoid(2x) - 1":
            lambda X: 2 / (1 + torch.exp(-X)) - 1,
    }
    _activation_check(t, tanh_, tanh, likely, ACTIVATIONS)


# --- their derivatives ---------------------------------------------------------------------


@CHAPTER.exercise("relu_grad", points=1)
def check_relu_grad(t, relu_grad_):
    likely = {
        "the derivative at 0 is taken as 1 (X >= 0): this course (and PyTorch) uses 0 at 0, "
        "so use X > 0": lambda X: (X >= 0).to(X.dtype),
        "ReLU itself instead of its derivative": relu,
        "sign(x): the derivative is 0, not -1, for negative inputs": torch.sign,
    }
    _activation_check(t, relu_grad_, relu_grad, likely, GRAD_FORBIDDEN)


@CHAPTER.exercise("sigmoid_grad", points=1)
def check_sigmoid_grad(t, sigmoid_grad_):
    likely = {
        "exp(-x) / (1 + exp(-x))**2 overflows for very negative x (inf / inf = NaN): use "
        "sigmoid(x) * (1 - sigmoid(x)) with a stable sigmoid":
            lambda X: torch.exp(-X) / (1 + torch.exp(-X)) ** 2,
        "sigmoid(x) * (1 - x): the derivative is sigmoid(x) * (1 - sigmoid(x))":
            lambda X: sigmoid(X) * (1 - X),
        "1 - sigmoid(x)**2 is the pattern of tanh's derivative; sigmoid's is "
        "sigmoid(x) * (1 - sigmoid(x))": lambda X: 1 - sigmoid(X) ** 2,
        "sigmoid itself instead of its derivative": sigmoid,
    }
    _activation_check(t, sigmoid_grad_, sigmoid_grad, likely, GRAD_FORBIDDEN)


@CHAPTER.exercise("tanh_grad", points=1)
def check_tanh_grad(t, tanh_grad_):
    likely = {
        "1 - tanh(x) without the square: the derivative is 1 - tanh(x)**2":
            lambda X: 1 - tanh(X),
        "1 - x**2: square tanh(x), not x": lambda X: 1 - X ** 2,
        "a tanh that overflows (NaN for large |x|): use a stable tanh":
            lambda X: 1 - _naive_tanh(X) ** 2,
        "a tanh that overflows for very negative x (NaN)": lambda X: 1 - _d2l_tanh(X) ** 2,
        "sigmoid's derivative instead of tanh's": sigmoid_grad,
    }
    _activation_check(t, tanh_grad_, tanh_grad, likely, GRAD_FORBIDDEN)


# --- init_mlp_params ---------------------------------------------------------------------


def _params(out, what, n=4):
    if not isinstance(out, tuple | list) or len(out) != n:
        raise Mismatch(f"{what} should return a list [W1, b1, W2, b2], but returned "
                       + (f"{type(out).__name__} of length {len(out)}"
                          if isinstance(out, tuple | list) else fmt_value(out)))
    return out


def _init_case(t, init, num_inputs, num_hiddens, num_outputs, sigma, seed, default_sigma=False):
    if default_sigma:
        what = f"init_mlp_params({num_inputs}, {num_hiddens}, {num_outputs}, generator=g)"
        out = t.call(init, num_inputs, num_hiddens, num_outputs, generator=gen(seed), what=what)
    else:
        what = (f"init_mlp_params({num_inputs}, {num_hiddens}, {num_outputs}, sigma={sigma}, "
                "generator=g)")
        out = t.call(init, num_inputs, num_hiddens, num_outputs, sigma, gen(seed), what=what)
    params = _params(out, what)
    shapes = {"W1": (num_inputs, num_hiddens), "b1": (num_hiddens,),
              "W2": (num_hiddens, num_outputs), "b2": (num_outputs,)}
    for (name, shape), p in zip(shapes.items(), params):
        if not isinstance(p, torch.Tensor):
            raise Mismatch(f"{name} of {what} should be a tensor, but is {fmt_value(p)}")
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


@CHAPTER.exercise("init_mlp_params", points=2)
def check_init_mlp_params(t, init):
    with t.case("784 inputs, 256 hidden units, 10 outputs, sigma = 0.01: shapes, leaves that "
                "require grad, zero biases, weights N(0, 0.01**2)", weight=2):
        _init_case(t, init, 784, 256, 10, 0.01, 0)
    with t.case("all randomness comes from `generator`"):
        def flat(seed, rng_seed):
            torch.manual_seed(rng_seed)
            out = _params(t.call(init, 20, 30, 5, 0.1, gen(seed)), "init_mlp_params(...)")
            return torch.cat([p.detach().flatten() for p in out])
        a, b, c = flat(7, 1), flat(7, 2), flat(8, 1)
        if not torch.equal(a, b):
            raise Mismatch("two calls with generators of the same seed gave different "
                           "parameters\n  likely cause: torch.randn called without "
                           "`generator=generator`, so it uses the global random state")
        if torch.equal(a, c):
            raise Mismatch("generators of different seeds gave the same parameters\n"
                           "  likely cause: the generator is not used, or re-seeded inside")
    if not t.hidden:
        return
    for i, (sizes, sigma) in enumerate((((100, 300, 20), 1.0), ((64, 64, 64), 0.1),
                                        ((2000, 50, 30), 0.5))):
        with t.case(f"sizes {sizes}, sigma = {sigma}"):
            _init_case(t, init, *sizes, sigma, 10 + i)
    with t.case("the default sigma is 0.01"):
        _init_case(t, init, 300, 200, 10, 0.01, 20, default_sigma=True)
    with t.case("W1 and W2 are drawn independently"):
        W1, _, W2, _ = _init_case(t, init, 50, 50, 50, 1.0, 21)
        if torch.equal(W1.detach(), W2.detach()):
            raise Mismatch("W1 and W2 are identical\n  likely cause: the generator is re-seeded "
                           "before each draw, or one tensor is used twice")
    with t.case("gradients reach every parameter"):
        params = _init_case(t, init, 6, 5, 3, 1.0, 22)
        X = randn(4, 6, seed=23, dtype=torch.float32)
        mlp_forward(X, params).sum().backward()
        for name, p in zip(("W1", "b1", "W2", "b2"), params):
            if p.grad is None:
                raise Mismatch(f"{name}.grad is None after backward()")


# --- mlp_forward -----------------------------------------------------------------------------


def _forward_likely(params):
    W1, b1, W2, b2 = [p.detach() for p in params]

    def flat(X):
        return X.reshape(-1, W1.shape[0])

    return {
        "no activation on the hidden layer: without it the two layers are one linear map":
            lambda X: (flat(X) @ W1 + b1) @ W2 + b2,
        "an activation on the output layer: the output layer returns raw logits, apply ReLU "
        "to the hidden layer only": lambda X: relu(relu(flat(X) @ W1 + b1) @ W2 + b2),
        "a sigmoid instead of ReLU on the hidden layer":
            lambda X: sigmoid(flat(X) @ W1 + b1) @ W2 + b2,
        "the output bias b2 is missing": lambda X: relu(flat(X) @ W1 + b1) @ W2,
        "the hidden bias b1 is missing": lambda X: relu(flat(X) @ W1) @ W2 + b2,
        "X reshaped to (num_inputs, -1) and transposed: reshape to (-1, num_inputs), one "
        "example per row": lambda X: relu(X.reshape(W1.shape[0], -1).T @ W1 + b1) @ W2 + b2,
    }


def _forward_case(t, forward, X, params, tol):
    what = f"mlp_forward(X {tuple(X.shape)}, params)"
    try:
        got = t.call(forward, X, params, what=what)
    except Mismatch as failure:
        if "mat1 and mat2" in str(failure) and X.dim() > 2:
            raise Mismatch(f"{failure}\n  likely cause: X is not reshaped: images of shape "
                           f"{tuple(X.shape)} must become (-1, num_inputs) = (-1, "
                           f"{params[0].shape[0]}) before X @ W1") from None
        raise
    expected = mlp_forward(X.double(), [p.detach().double() for p in params]).to(X.dtype)
    if isinstance(got, torch.Tensor) and params[0].requires_grad and not got.requires_grad:
        raise Mismatch(f"{what}: the result does not depend on the parameters through autograd, "
                       "so training could not compute gradients\n  likely cause: .data, "
                       ".detach() or torch.no_grad() in the forward pass")
    likely = {c: (lambda f=f: f(X.clone())) for c, f in _forward_likely(params).items()}
    expect_tensor(got, expected, what=what, inputs={"X": X}, likely=likely, **tol)


def _rand_params(d, h, q, seed, dtype, grad=True):
    params = [randn(d, h, seed=seed, dtype=dtype), randn(h, seed=seed + 1, dtype=dtype),
              randn(h, q, seed=seed + 2, dtype=dtype), randn(q, seed=seed + 3, dtype=dtype)]
    return [p.requires_grad_(grad) for p in params]


@CHAPTER.exercise("mlp_forward", points=1)
def check_mlp_forward(t, forward):
    W1 = torch.tensor([[1.0, -1.0, 0.5], [2.0, 0.0, -1.0], [0.0, 1.0, 1.0], [-1.0, 1.0, 0.0]])
    b1 = torch.tensor([0.0, -1.0, 0.5])
    W2 = torch.tensor([[1.0, 0.0], [-1.0, 2.0], [0.5, 1.0]])
    b2 = torch.tensor([0.1, -0.2])
    X = torch.tensor([[[[1.0, 2.0], [0.0, -1.0]]], [[[-2.0, 1.0], [3.0, 0.5]]]])
    params = [p.requires_grad_() for p in (W1, b1, W2, b2)]
    with t.case("worked example: X of shape (2, 1, 2, 2) (images), 4 inputs, 3 hidden, "
                "2 outputs"):
        _forward_case(t, forward, X, params, dict(atol=1e-5, rtol=1e-5))
    if not t.hidden:
        return
    for i, (shape, (d, h, q), dtype) in enumerate((
            ((8, 1, 4, 4), (16, 10, 3), torch.float32),
            ((5, 12), (12, 7, 4), torch.float64),
            ((4, 4), (4, 4, 4), torch.float32),
            ((6, 6), (6, 6, 6), torch.float64),
            ((3, 2, 5), (10, 20, 10), torch.float64),
            ((1, 1, 28, 28), (784, 32, 10), torch.float32))):
        X = randn(*shape, seed=40 + i, dtype=dtype)
        params = _rand_params(d, h, q, 50 + 10 * i, dtype)
        tol = dict(atol=1e-4 * math.sqrt(d), rtol=1e-4) if dtype == torch.float32 else \
            dict(atol=1e-10 * math.sqrt(d), rtol=1e-10)
        with t.case(f"X {shape}, {d} inputs, {h} hidden, {q} outputs, {dtype}"):
            _forward_case(t, forward, X, params, tol)


# --- collapse_linear ---------------------------------------------------------------------


def _collapse_case(t, collapse, d, h, q, seed, dtype):
    W1, b1, W2, b2 = _rand_params(d, h, q, seed, dtype, grad=False)
    what = f"collapse_linear(W1 {(d, h)}, b1 {(h,)}, W2 {(h, q)}, b2 {(q,)})"
    try:
        out = t.call(collapse, W1, b1, W2, b2, what=what)
    except Mismatch as failure:
        if "must match the size of tensor" in str(failure):
            raise Mismatch(f"{failure}\n  likely cause: b1 + b2 adds vectors of different "
                           "lengths; the first bias passes through the second layer: "
                           "b = b1 @ W2 + b2") from None
        raise
    W, b = expect_pair(out, what, "W", "b")
    W_ref, b_ref = collapse_linear(*(p.double() for p in (W1, b1, W2, b2)))
    tol = dict(atol=1e-4 * h, rtol=1e-4) if dtype == torch.float32 else \
        dict(atol=1e-10 * h, rtol=1e-10)
    inputs = {"W1": W1, "b1": b1, "W2": W2, "b2": b2}
    expect_tensor(W, W_ref.to(dtype), what=f"W of {what}", inputs=inputs, likely={
        "W2 @ W1: the first layer acts first, so W = W1 @ W2": lambda: W2 @ W1,
        "W1 * W2 elementwise: the composition is the matrix product W1 @ W2": lambda: W1 * W2,
        "W1 + W2: composing linear maps multiplies their matrices": lambda: W1 + W2,
    }, **tol)
    if isinstance(b, torch.Tensor) and b.numel() == q and b.dim() == 2 and b.shape[0] == 1:
        b = b.reshape(q)  # a (1, q) bias broadcasts the same way
    expect_tensor(b, b_ref.to(dtype), what=f"b of {what}", inputs=inputs, likely={
        "b = b1 + b2: the first bias also passes through the second layer, b = b1 @ W2 + b2":
            lambda: b1 + b2,
        "b = b2 only: the first bias passes through the second layer, b = b1 @ W2 + b2":
            lambda: b2,
        "b = b1 @ W2 without b2: add the second layer's bias": lambda: b1 @ W2,
        "b = W2 @ b1 + b2 (the transpose of W2): b = b1 @ W2 + b2": lambda: W2 @ b1 + b2,
    }, **tol)
    X = randn(7, d, seed=seed + 9, dtype=dtype)
    expect_tensor(X @ W + b, ((X @ W1 + b1) @ W2 + b2), what="X @ W + b for a random X "
                  "compared with the two layers (X @ W1 + b1) @ W2 + b2", **tol)


@CHAPTER.exercise("collapse_linear", points=2)
def check_collapse_linear(t, collapse):
    with t.case("worked example: 2 inputs, 3 hidden units, 2 outputs"):
        _collapse_case(t, collapse, 2, 3, 2, 0, torch.float32)
    if not t.hidden:
        return
    for i, ((d, h, q), dtype) in enumerate(itertools.product(
            ((4, 4, 4), (5, 3, 2), (1, 8, 1), (10, 20, 10), (6, 6, 6)), DTYPES)):
        with t.case(f"{d} inputs, {h} hidden, {q} outputs, {dtype}"):
            _collapse_case(t, collapse, d, h, q, 10 * (i + 1), dtype)


# --- make_mlp ------------------------------------------------------------------------------


def _describe(layer) -> str:
    if isinstance(layer, nn.Linear):
        return f"Linear({layer.in_features}, {layer.out_features})"
    return type(layer).__name__


def _make_case(t, make, num_inputs, num_hiddens, num_outputs, image_shape):
    what = f"make_mlp({num_inputs}, {list(num_hiddens)}, {num_outputs})"
    net = t.call(make, num_inputs, num_hiddens, num_outputs, what=what)
    if not isinstance(net, nn.Sequential):
        raise Mismatch(f"{what} should return an nn.Sequential, but returned "
                       f"{type(net).__name__}")
    got = [_describe(m) for m in net]
    expected = [_describe(m) for m in make_mlp(num_inputs, num_hiddens, num_outputs)]
    if got != expected:
        cause = None
        linears = [m for m in net if isinstance(m, nn.Linear)]
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
        elif any(m.in_features == num_inputs for m in linears[1:]):
            cause = ("in_features of each Linear must be the previous layer's out_features "
                     "(only the first takes num_inputs)")
        raise Mismatch(f"{what} has the layers\n    {', '.join(got)}\n  expected\n    "
                       f"{', '.join(expected)}" + (f"\n  likely cause: {cause}" if cause else ""))
    for m in net:
        if isinstance(m, nn.Linear) and m.bias is None:
            raise Mismatch(f"{what}: a Linear layer has no bias (bias=False); keep the default")
    X = randn(3, *image_shape, seed=1, dtype=torch.float32)
    try:
        with torch.no_grad():
            out = net(X)
    except Exception as exc:
        raise Mismatch(f"{what} failed on a batch X of shape {tuple(X.shape)}: "
                       f"{type(exc).__name__}: {exc}") from None
    if tuple(out.shape) != (3, num_outputs):
        raise Mismatch(f"{what} maps X {tuple(X.shape)} to shape {tuple(out.shape)}, expected "
                       f"{(3, num_outputs)}")


@CHAPTER.exercise("make_mlp", points=2)
def check_make_mlp(t, make):
    with t.case("worked example: make_mlp(784, [256], 10) on images (n, 1, 28, 28)"):
        _make_case(t, make, 784, [256], 10, (1, 28, 28))
    if not t.hidden:
        return
    for sizes in ((784, [256, 128], 10), (16, [], 3), (12, [8, 8, 8], 4), (5, [5, 5], 5),
                  (784, [64], 10)):
        with t.case(f"make_mlp{sizes}"):
            d = sizes[0]
            _make_case(t, make, *sizes, (1, 28, 28) if d == 784 else (d,))
    with t.case("num_hiddens as a tuple (16, 8)"):
        _make_case(t, make, 20, (16, 8), 2, (4, 5))


# --- D2L 5.1 exercises: pReLU and its derivative, tanh from the sigmoid ------------------


@CHAPTER.exercise("prelu", points=1)
def check_prelu(t, prelu_):
    def likely(alpha):
        return {
            "max(x, alpha * x) equals pReLU only for alpha <= 1: use max(0, x) + alpha * "
            "min(0, x)": lambda X, a: torch.maximum(X, alpha * X),
            "alpha multiplies the positive part: pReLU is x for x > 0 and alpha * x below":
                lambda X, a: alpha * relu(X) + torch.minimum(X, torch.zeros_like(X)),
            "alpha is ignored (a plain ReLU)": lambda X, a: relu(X),
        }

    def case(X, alpha):
        _elementwise(t, prelu_, X, prelu, likely(alpha), ACTIVATIONS, extra=(alpha,),
                     what=f"prelu(X, alpha={alpha})")

    with t.case("worked example: X = [-2, -0.5, 0, 0.5, 2], alpha = 0.25"):
        case(torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0]), 0.25)
    if not t.hidden:
        return
    for (label, X), alpha in zip(_inputs(), itertools.cycle((0.25, 0.01, 0.0, 1.0, 1.5, -0.3))):
        with t.case(f"{label}, alpha = {alpha}"):
            case(X, alpha)


@CHAPTER.exercise("prelu_grad", points=1)
def check_prelu_grad(t, prelu_grad_):
    def likely(alpha):
        return {
            "the derivative at 0 is taken as 1 (X >= 0): use alpha at 0, so that alpha = 0 "
            "gives relu_grad": lambda X, a: torch.where(X >= 0, torch.ones_like(X),
                                                        torch.full_like(X, alpha)),
            "alpha * x instead of alpha for negative inputs (the derivative of alpha * x is "
            "alpha)": lambda X, a: torch.where(X > 0, torch.ones_like(X), alpha * X),
            "the slopes are swapped: 1 for x > 0, alpha for x < 0":
                lambda X, a: torch.where(X > 0, torch.full_like(X, alpha), torch.ones_like(X)),
            "alpha is ignored (relu_grad)": lambda X, a: relu_grad(X),
        }

    def case(X, alpha):
        _elementwise(t, prelu_grad_, X, prelu_grad, likely(alpha), GRAD_FORBIDDEN,
                     extra=(alpha,), what=f"prelu_grad(X, alpha={alpha})")

    with t.case("worked example: X = [-2, -0.5, 0, 0.5, 2], alpha = 0.25"):
        case(torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0]), 0.25)
    if not t.hidden:
        return
    for (label, X), alpha in zip(_inputs(), itertools.cycle((0.25, 0.01, 1.5, -0.3))):
        with t.case(f"{label}, alpha = {alpha}"):
            case(X, alpha)


class _RecordingSigmoid:
    """A sigmoid (or another function) that records the inputs it is called with."""

    def __init__(self, fn=sigmoid):
        self.fn, self.calls = fn, 0

    def __call__(self, Z):
        self.calls += 1
        return self.fn(Z)


def _squashed(Z):
    """Not a sigmoid: a function with which 2 f(2x) - 1 is not tanh."""
    return sigmoid(Z) ** 2


@CHAPTER.exercise("tanh_via_sigmoid", points=1)
def check_tanh_via_sigmoid(t, tvs):
    def case(X, fn=sigmoid):
        rec = _RecordingSigmoid(fn)
        what = "tanh_via_sigmoid(X, sigmoid)"
        got = t.call(tvs, X, rec, what=what, forbidden=ACTIVATIONS)
        if rec.calls == 0:
            raise Mismatch(f"{what} never calls the sigmoid it is given\n  likely cause: "
                           "compute tanh from the argument `sigmoid` with the identity "
                           "tanh(x) = 2 * sigmoid(2x) - 1")
        expected = tanh_via_sigmoid(X.double(), fn).to(X.dtype)
        likely = {
            "2 * sigmoid(x) - 1 is tanh(x / 2): the identity is tanh(x) = 2 * sigmoid(2x) - 1":
                lambda: 2 * fn(X) - 1,
            "sigmoid(2x) - 1: multiply the sigmoid by 2": lambda: fn(2 * X) - 1,
            "2 * sigmoid(2x) without the - 1": lambda: 2 * fn(2 * X),
            "1 - 2 * sigmoid(2x): the sign is flipped (tanh(x) = 2 * sigmoid(2x) - 1)":
                lambda: 1 - 2 * fn(2 * X),
        }
        expect_tensor(got, expected, what=what, inputs={"X": X}, likely=likely,
                      **_bounded_tol(X.dtype))

    with t.case("worked example: X = [-3, -1, 0, 1, 3] with a sigmoid"):
        case(torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0]))
    if not t.hidden:
        return
    for label, X in _inputs():
        with t.case(label):
            case(X)
    with t.case("the result is built from the function passed as `sigmoid` (here not a "
                "sigmoid, so the result is not tanh)"):
        case(torch.linspace(-4, 4, 17), _squashed)
