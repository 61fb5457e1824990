"""03_mlp: multilayer perceptrons (D2L 5.1-5.2).

Instructor only: the references, the tables of likely mistakes (`LIKELY`) and the hidden check
of each exercise. The visible checks (worked examples) and the judge helpers both parts share
are public, in `grader.checks.mlp`. Activations and their derivatives are checked on ordinary
inputs and on inputs up to +-1e4, where formulas with exp(x) overflow; references compute in
float64.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from grader.cases import DTYPES, randn
from grader.checks.mlp import (  # the public half registers the exercises
    ACTIVATIONS,
    CHAPTER,
    GRAD_FORBIDDEN,
    collapse_case,
    elementwise,
    forward_case,
    init_case,
    layer_name,
    make_case,
    rand_params,
    swish_case,
    tanh_via_sigmoid_case,
)
from grader.feedback import Mismatch
from grader.probes.mlp import describe_layers

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


def swish(X, beta=1.0):
    return X * sigmoid(beta * X)


def swish_grad(X, beta=1.0):
    # product rule: d/dx [x s(beta x)] = s(beta x) + x * beta * s(beta x) (1 - s(beta x))
    s = sigmoid(beta * X)
    return s + beta * X * s * (1 - s)


# --- reference values the checks ask for (t.ref) -------------------------------------------


def _in_float64(fn):
    """fn computed in float64, cast back to the input's dtype."""
    def ref(X, *extra):
        return fn(X.double(), *extra).to(X.dtype)
    return ref


def _sigmoid_power(power):
    """The function the probe `mlp.recorder` computes: sigmoid ** power (1: a sigmoid)."""
    return sigmoid if power == 1 else (lambda Z: sigmoid(Z) ** power)


def _mlp_forward_ref(X, params):
    return mlp_forward(X.double(), [p.detach().double() for p in params]).to(X.dtype)


def _collapse_ref(W1, b1, W2, b2):
    W, b = collapse_linear(*(p.detach().double() for p in (W1, b1, W2, b2)))
    return W.to(W1.dtype), b.to(W1.dtype)


def _two_layers(X, W1, b1, W2, b2):
    """The two affine layers without activation, (X @ W1 + b1) @ W2 + b2."""
    dtype = X.dtype
    X, W1, b1, W2, b2 = (p.detach().double() for p in (X, W1, b1, W2, b2))
    return ((X @ W1 + b1) @ W2 + b2).to(dtype)


def mlp_layers(num_inputs, num_hiddens, num_outputs):
    """The layers of the reference make_mlp, as the visible check names them."""
    return [layer_name(m) for m in describe_layers(make_mlp(num_inputs, num_hiddens,
                                                            num_outputs))["layers"]]


def _tanh_via_sigmoid_ref(X, power):
    return tanh_via_sigmoid(X.double(), _sigmoid_power(power)).to(X.dtype)


REFERENCES = {
    **{name: _in_float64(fn) for name, fn in (
        ("relu", relu), ("sigmoid", sigmoid), ("tanh", tanh), ("relu_grad", relu_grad),
        ("sigmoid_grad", sigmoid_grad), ("tanh_grad", tanh_grad), ("prelu", prelu),
        ("prelu_grad", prelu_grad), ("swish", swish), ("swish_grad", swish_grad))},
    "mlp_forward": _mlp_forward_ref,
    "collapse_linear": _collapse_ref,
    "two_layers": _two_layers,
    "mlp_layers": mlp_layers,
    "tanh_via_sigmoid": _tanh_via_sigmoid_ref,
}


# --- likely mistakes (t.likely): cause -> the buggy function, of the same arguments ----------


def _naive_sigmoid_pos(X):
    return torch.exp(X) / (1 + torch.exp(X))


def _naive_tanh(X):
    return (torch.exp(X) - torch.exp(-X)) / (torch.exp(X) + torch.exp(-X))


def _d2l_tanh(X):
    return (1 - torch.exp(-2 * X)) / (1 + torch.exp(-2 * X))


def _swish_grad_of(X, beta, inner=None):
    """s + inner * x * s * (1 - s), s = sigmoid(beta x); inner = beta is the derivative."""
    s = sigmoid(beta * X)
    return s + (beta if inner is None else inner) * X * s * (1 - s)


def _flat(X, W1):
    return X.reshape(-1, W1.shape[0])


def _forward_bug(body):
    """A buggy forward pass body(X, W1, b1, W2, b2), on detached parameters."""
    def bug(X, params):
        return body(X, *(p.detach() for p in params))
    return bug


LIKELY = {
    "relu": {
        "the absolute value instead of max(x, 0)": torch.abs,
        "the negative part min(x, 0) instead of the positive part": lambda X: torch.minimum(
            X, torch.zeros_like(X)),
        "a leaky ReLU (a small slope for negative inputs); ReLU is exactly 0 there":
            lambda X: torch.where(X > 0, X, 0.01 * X),
    },
    "sigmoid": {
        "exp(x) / (1 + exp(x)) overflows for large x (inf / inf = NaN): use 1 / (1 + exp(-x)), "
        "or exp of -|x| only": _naive_sigmoid_pos,
        "exp(-x) / (1 + exp(-x)) overflows for very negative x (inf / inf = NaN)":
            lambda X: torch.exp(-X) / (1 + torch.exp(-X)),
        "the sign in the exponent: 1 / (1 + exp(x)) is sigmoid(-x)":
            lambda X: 1 / (1 + torch.exp(X)),
    },
    "tanh": {
        "(exp(x) - exp(-x)) / (exp(x) + exp(-x)) overflows (inf / inf = NaN) already for "
        "|x| near 100 in float32: use exp of a non-positive number only, e.g. 2 * sigmoid(2x) "
        "- 1 with a stable sigmoid, or sign(x) * (1 - exp(-2|x|)) / (1 + exp(-2|x|))":
            _naive_tanh,
        "(1 - exp(-2x)) / (1 + exp(-2x)) overflows for very negative x (inf / inf = NaN): "
        "use |x| and the sign, or 2 * sigmoid(2x) - 1": _d2l_tanh,
        "2 * sigmoid(x) - 1 is tanh(x / 2): the identity is tanh(x) = 2 * sigmoid(2x) - 1":
            lambda X: 2 / (1 + torch.exp(-X)) - 1,
    },
    "relu_grad": {
        "the derivative at 0 is taken as 1 (X >= 0): this course (and PyTorch) uses 0 at 0, "
        "so use X > 0": lambda X: (X >= 0).to(X.dtype),
        "ReLU itself instead of its derivative": relu,
        "sign(x): the derivative is 0, not -1, for negative inputs": torch.sign,
    },
    "sigmoid_grad": {
        "exp(-x) / (1 + exp(-x))**2 overflows for very negative x (inf / inf = NaN): use "
        "sigmoid(x) * (1 - sigmoid(x)) with a stable sigmoid":
            lambda X: torch.exp(-X) / (1 + torch.exp(-X)) ** 2,
        "sigmoid(x) * (1 - x): the derivative is sigmoid(x) * (1 - sigmoid(x))":
            lambda X: sigmoid(X) * (1 - X),
        "1 - sigmoid(x)**2 is the pattern of tanh's derivative; sigmoid's is "
        "sigmoid(x) * (1 - sigmoid(x))": lambda X: 1 - sigmoid(X) ** 2,
        "sigmoid itself instead of its derivative": sigmoid,
    },
    "tanh_grad": {
        "1 - tanh(x) without the square: the derivative is 1 - tanh(x)**2":
            lambda X: 1 - tanh(X),
        "1 - x**2: square tanh(x), not x": lambda X: 1 - X ** 2,
        "a tanh that overflows (NaN for large |x|): use a stable tanh":
            lambda X: 1 - _naive_tanh(X) ** 2,
        "a tanh that overflows for very negative x (NaN)": lambda X: 1 - _d2l_tanh(X) ** 2,
        "sigmoid's derivative instead of tanh's": sigmoid_grad,
    },
    "mlp_forward": {
        "no activation on the hidden layer: without it the two layers are one linear map":
            _forward_bug(lambda X, W1, b1, W2, b2: (_flat(X, W1) @ W1 + b1) @ W2 + b2),
        "an activation on the output layer: the output layer returns raw logits, apply ReLU "
        "to the hidden layer only":
            _forward_bug(lambda X, W1, b1, W2, b2: relu(relu(_flat(X, W1) @ W1 + b1) @ W2 + b2)),
        "a sigmoid instead of ReLU on the hidden layer":
            _forward_bug(lambda X, W1, b1, W2, b2: sigmoid(_flat(X, W1) @ W1 + b1) @ W2 + b2),
        "the output bias b2 is missing":
            _forward_bug(lambda X, W1, b1, W2, b2: relu(_flat(X, W1) @ W1 + b1) @ W2),
        "the hidden bias b1 is missing":
            _forward_bug(lambda X, W1, b1, W2, b2: relu(_flat(X, W1) @ W1) @ W2 + b2),
        "X reshaped to (num_inputs, -1) and transposed: reshape to (-1, num_inputs), one "
        "example per row": _forward_bug(
            lambda X, W1, b1, W2, b2: relu(X.reshape(W1.shape[0], -1).T @ W1 + b1) @ W2 + b2),
    },
    "collapse_linear_W": {
        "W2 @ W1: the first layer acts first, so W = W1 @ W2": lambda W1, b1, W2, b2: W2 @ W1,
        "W1 * W2 elementwise: the composition is the matrix product W1 @ W2":
            lambda W1, b1, W2, b2: W1 * W2,
        "W1 + W2: composing linear maps multiplies their matrices":
            lambda W1, b1, W2, b2: W1 + W2,
    },
    "collapse_linear_b": {
        "b = b1 + b2: the first bias also passes through the second layer, b = b1 @ W2 + b2":
            lambda W1, b1, W2, b2: b1 + b2,
        "b = b2 only: the first bias passes through the second layer, b = b1 @ W2 + b2":
            lambda W1, b1, W2, b2: b2,
        "b = b1 @ W2 without b2: add the second layer's bias": lambda W1, b1, W2, b2: b1 @ W2,
        "b = W2 @ b1 + b2 (the transpose of W2): b = b1 @ W2 + b2":
            lambda W1, b1, W2, b2: W2 @ b1 + b2,
    },
    "prelu": {
        "max(x, alpha * x) equals pReLU only for alpha <= 1: use max(0, x) + alpha * "
        "min(0, x)": lambda X, alpha: torch.maximum(X, alpha * X),
        "alpha multiplies the positive part: pReLU is x for x > 0 and alpha * x below":
            lambda X, alpha: alpha * relu(X) + torch.minimum(X, torch.zeros_like(X)),
        "alpha is ignored (a plain ReLU)": lambda X, alpha: relu(X),
    },
    "prelu_grad": {
        "the derivative at 0 is taken as 1 (X >= 0): use alpha at 0, so that alpha = 0 "
        "gives relu_grad": lambda X, alpha: torch.where(X >= 0, torch.ones_like(X),
                                                        torch.full_like(X, alpha)),
        "alpha * x instead of alpha for negative inputs (the derivative of alpha * x is "
        "alpha)": lambda X, alpha: torch.where(X > 0, torch.ones_like(X), alpha * X),
        "the slopes are swapped: 1 for x > 0, alpha for x < 0":
            lambda X, alpha: torch.where(X > 0, torch.full_like(X, alpha), torch.ones_like(X)),
        "alpha is ignored (relu_grad)": lambda X, alpha: relu_grad(X),
    },
    "swish": {
        "beta is ignored: swish is x * sigmoid(beta * x)":
            lambda X, beta=1.0: X * sigmoid(X),
        "beta multiplies the output: it belongs inside the sigmoid, x * sigmoid(beta * x)":
            lambda X, beta=1.0: beta * X * sigmoid(X),
        "x * exp(beta x) / (1 + exp(beta x)) overflows for large beta x (inf / inf = NaN): "
        "use a stable sigmoid": lambda X, beta=1.0: X * _naive_sigmoid_pos(beta * X),
        "sigmoid(beta * x) without the factor x": lambda X, beta=1.0: sigmoid(beta * X),
    },
    "swish_grad": {
        "the factor beta is missing in the second term: by the chain rule, d/dx sigmoid(beta x) "
        "= beta * sigmoid'(beta x), so the derivative is s + beta * x * s * (1 - s) with "
        "s = sigmoid(beta x)": lambda X, beta=1.0: _swish_grad_of(X, beta, inner=1.0),
        "the product rule's second term is missing: d/dx [x * s(beta x)] = s(beta x) + x * "
        "d/dx s(beta x) = s + beta * x * s * (1 - s)":
            lambda X, beta=1.0: sigmoid(beta * X),
        "the product rule's first term sigmoid(beta x) is missing (the derivative of the factor "
        "x is 1, times sigmoid(beta x))":
            lambda X, beta=1.0: _swish_grad_of(X, beta) - sigmoid(beta * X),
        "a sign error: the derivative is s + beta * x * s * (1 - s), with a plus":
            lambda X, beta=1.0: 2 * sigmoid(beta * X) - _swish_grad_of(X, beta),
        "beta is ignored: that is the derivative of x * sigmoid(x)":
            lambda X, beta=1.0: _swish_grad_of(X, 1.0),
        "exp(-beta x) / (1 + exp(-beta x))**2 overflows for very negative beta x (inf / inf = "
        "NaN): write sigmoid' as s * (1 - s) with a stable sigmoid":
            lambda X, beta=1.0: sigmoid(beta * X) + beta * X * torch.exp(-beta * X) / (
                1 + torch.exp(-beta * X)) ** 2,
    },
    "tanh_via_sigmoid": {
        "2 * sigmoid(x) - 1 is tanh(x / 2): the identity is tanh(x) = 2 * sigmoid(2x) - 1":
            lambda X, power: 2 * _sigmoid_power(power)(X) - 1,
        "sigmoid(2x) - 1: multiply the sigmoid by 2":
            lambda X, power: _sigmoid_power(power)(2 * X) - 1,
        "2 * sigmoid(2x) without the - 1": lambda X, power: 2 * _sigmoid_power(power)(2 * X),
        "1 - 2 * sigmoid(2x): the sign is flipped (tanh(x) = 2 * sigmoid(2x) - 1)":
            lambda X, power: 1 - 2 * _sigmoid_power(power)(2 * X),
    },
}


# --- hidden inputs -------------------------------------------------------------------------

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


def _activation_hidden(t, fn, forbidden):
    for label, X in _inputs():
        with t.case(label, weight=2 if "extreme" in label else 1):
            elementwise(t, fn, X, forbidden)


# --- the activations and their derivatives -------------------------------------------------


@CHAPTER.hidden("relu")
def hidden_relu(t, relu_):
    _activation_hidden(t, relu_, ACTIVATIONS)


@CHAPTER.hidden("sigmoid")
def hidden_sigmoid(t, sigmoid_):
    _activation_hidden(t, sigmoid_, ACTIVATIONS)


@CHAPTER.hidden("tanh")
def hidden_tanh(t, tanh_):
    _activation_hidden(t, tanh_, ACTIVATIONS)


@CHAPTER.hidden("relu_grad")
def hidden_relu_grad(t, relu_grad_):
    _activation_hidden(t, relu_grad_, GRAD_FORBIDDEN)


@CHAPTER.hidden("sigmoid_grad")
def hidden_sigmoid_grad(t, sigmoid_grad_):
    _activation_hidden(t, sigmoid_grad_, GRAD_FORBIDDEN)


@CHAPTER.hidden("tanh_grad")
def hidden_tanh_grad(t, tanh_grad_):
    _activation_hidden(t, tanh_grad_, GRAD_FORBIDDEN)


# --- init_mlp_params ---------------------------------------------------------------------


@CHAPTER.hidden("init_mlp_params")
def hidden_init_mlp_params(t, init):
    for i, (sizes, sigma) in enumerate((((100, 300, 20), 1.0), ((64, 64, 64), 0.1),
                                        ((2000, 50, 30), 0.5))):
        with t.case(f"sizes {sizes}, sigma = {sigma}"):
            init_case(t, init, *sizes, sigma, 10 + i)
    with t.case("the default sigma is 0.01"):
        init_case(t, init, 300, 200, 10, 0.01, 20, default_sigma=True)
    with t.case("W1 and W2 are drawn independently"):
        W1, _, W2, _ = init_case(t, init, 50, 50, 50, 1.0, 21)
        if torch.equal(W1.detach(), W2.detach()):
            raise Mismatch("W1 and W2 are identical\n  likely cause: the generator is re-seeded "
                           "before each draw, or one tensor is used twice")
    with t.case("gradients reach every parameter"):
        params = init_case(t, init, 6, 5, 3, 1.0, 22)
        X = randn(4, 6, seed=23, dtype=torch.float32)
        mlp_forward(X, params).sum().backward()
        for name, p in zip(("W1", "b1", "W2", "b2"), params):
            if p.grad is None:
                raise Mismatch(f"{name}.grad is None after backward()")


# --- mlp_forward -----------------------------------------------------------------------------


@CHAPTER.hidden("mlp_forward")
def hidden_mlp_forward(t, forward):
    for i, (shape, (d, h, q), dtype) in enumerate((
            ((8, 1, 4, 4), (16, 10, 3), torch.float32),
            ((5, 12), (12, 7, 4), torch.float64),
            ((4, 4), (4, 4, 4), torch.float32),
            ((6, 6), (6, 6, 6), torch.float64),
            ((3, 2, 5), (10, 20, 10), torch.float64),
            ((1, 1, 28, 28), (784, 32, 10), torch.float32))):
        X = randn(*shape, seed=40 + i, dtype=dtype)
        params = rand_params(d, h, q, 50 + 10 * i, dtype)
        tol = dict(atol=1e-4 * math.sqrt(d), rtol=1e-4) if dtype == torch.float32 else \
            dict(atol=1e-10 * math.sqrt(d), rtol=1e-10)
        with t.case(f"X {shape}, {d} inputs, {h} hidden, {q} outputs, {dtype}"):
            forward_case(t, forward, X, params, tol)


# --- collapse_linear ---------------------------------------------------------------------


@CHAPTER.hidden("collapse_linear")
def hidden_collapse_linear(t, collapse):
    for i, ((d, h, q), dtype) in enumerate(itertools.product(
            ((4, 4, 4), (5, 3, 2), (1, 8, 1), (10, 20, 10), (6, 6, 6)), DTYPES)):
        with t.case(f"{d} inputs, {h} hidden, {q} outputs, {dtype}"):
            collapse_case(t, collapse, d, h, q, 10 * (i + 1), dtype)


# --- make_mlp ------------------------------------------------------------------------------


@CHAPTER.hidden("make_mlp")
def hidden_make_mlp(t, make):
    for sizes in ((784, [256, 128], 10), (16, [], 3), (12, [8, 8, 8], 4), (5, [5, 5], 5),
                  (784, [64], 10)):
        with t.case(f"make_mlp{sizes}"):
            d = sizes[0]
            make_case(t, make, *sizes, (1, 28, 28) if d == 784 else (d,))
    with t.case("num_hiddens as a tuple (16, 8)"):
        make_case(t, make, 20, (16, 8), 2, (4, 5))


# --- D2L 5.1 exercises: pReLU and its derivative, tanh from the sigmoid ------------------


@CHAPTER.hidden("prelu")
def hidden_prelu(t, prelu_):
    for (label, X), alpha in zip(_inputs(), itertools.cycle((0.25, 0.01, 0.0, 1.0, 1.5, -0.3))):
        with t.case(f"{label}, alpha = {alpha}"):
            elementwise(t, prelu_, X, ACTIVATIONS, what=f"prelu(X, alpha={alpha})",
                        extra=(alpha,))


@CHAPTER.hidden("prelu_grad")
def hidden_prelu_grad(t, prelu_grad_):
    for (label, X), alpha in zip(_inputs(), itertools.cycle((0.25, 0.01, 1.5, -0.3))):
        with t.case(f"{label}, alpha = {alpha}"):
            elementwise(t, prelu_grad_, X, GRAD_FORBIDDEN, what=f"prelu_grad(X, alpha={alpha})",
                        extra=(alpha,))


@CHAPTER.hidden("tanh_via_sigmoid")
def hidden_tanh_via_sigmoid(t, tvs):
    for label, X in _inputs():
        with t.case(label):
            tanh_via_sigmoid_case(t, tvs, X)
    with t.case("the result is built from the function passed as `sigmoid` (here not a "
                "sigmoid, so the result is not tanh)"):
        tanh_via_sigmoid_case(t, tvs, torch.linspace(-4, 4, 17), power=2)


# --- D2L 5.1 exercise 3: Swish and its derivative --------------------------------------------

SWISH_BETAS = (1.0, 0.5, 2.0, -1.0, 1.5, 0.0)


def _swish_hidden(t, fn, forbidden):
    for (label, X), beta in zip(_inputs(), itertools.cycle(SWISH_BETAS)):
        with t.case(f"{label}, beta = {beta:g}", weight=2 if "extreme" in label else 1):
            swish_case(t, fn, X, forbidden, beta)
    with t.case("the default beta = 1, extreme inputs (float32)"):
        swish_case(t, fn, torch.tensor(EXTREMES, dtype=torch.float32), forbidden)


@CHAPTER.hidden("swish")
def hidden_swish(t, swish_):
    _swish_hidden(t, swish_, ACTIVATIONS)


@CHAPTER.hidden("swish_grad")
def hidden_swish_grad(t, swish_grad_):
    _swish_hidden(t, swish_grad_, GRAD_FORBIDDEN)
