"""06_initialization: numerical stability and initialisation (D2L 5.4), the instructor's half.

The references, the values derived from them that the visible checks ask for (`t.ref`), the
likely mistakes (`LIKELY`, for `t.likely`) and the hidden checks. The visible checks and the
judging helpers are public (`grader.checks.initialization`).

Weights follow the `nn.Linear` convention, shape `(fan_out, fan_in)`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from grader import wire
from grader.cases import gen, randn
from grader.checks.initialization import (  # the public half registers the exercises
    CE,
    CHAPTER,
    NO_NN_INIT,
    blank,
    init_weights_case,
    kaiming_case,
    norm_case,
    parameter_case,
    reproducible,
    softmax_grad_case,
    xavier_normal_case,
    xavier_uniform_case,
)
from grader.feedback import Mismatch
from grader.observe import build_loss
from grader.probes.initialization import fill_grads, mlp

# --- references ---------------------------------------------------------------------------


def fans(W):
    """(fan_in, fan_out) of a weight of shape (fan_out, fan_in, *kernel)."""
    receptive = math.prod(W.shape[2:]) if W.dim() > 2 else 1
    return W.shape[1] * receptive, W.shape[0] * receptive


def xavier_uniform_(W, gain=1.0, generator=None):
    fan_in, fan_out = fans(W)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        W.uniform_(-a, a, generator=generator)
    return W


def xavier_normal_(W, gain=1.0, generator=None):
    fan_in, fan_out = fans(W)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    with torch.no_grad():
        W.normal_(0.0, std, generator=generator)
    return W


def kaiming_normal_(W, generator=None):
    fan_in, _ = fans(W)
    with torch.no_grad():
        W.normal_(0.0, math.sqrt(2.0 / fan_in), generator=generator)
    return W


def init_weights(m):
    if isinstance(m, nn.Linear):
        xavier_uniform_(m.weight)
        if m.bias is not None:
            with torch.no_grad():
                m.bias.zero_()


def layer_gradient_norms(net, X, y, loss):
    net.zero_grad(set_to_none=True)
    loss(net(X), y).mean().backward()
    return [m.weight.grad.norm().item() for m in net.modules() if isinstance(m, nn.Linear)]


def softmax_regression_grad(X, y, W, b):
    P = torch.softmax(X @ W.T + b, dim=1)
    dO = (P - nn.functional.one_hot(y, W.shape[0]).to(P.dtype)) / X.shape[0]
    return dO.T @ X, dO.sum(0)


def _softmax_grads(X, y, W, b, *, mean=True, sign=1.0, bias=True, labels=True, dim=1,
                   naive=False):
    """The gradients (float64, cast to X's dtype); the keywords make the likely mistakes."""
    X64, W64, b64 = X.double(), W.double(), b.double()
    O = X64 @ W64.T + (b64 if bias else 0.0)
    if naive:
        E = torch.exp(O)
        P = E / E.sum(dim, keepdim=True)
    else:
        P = torch.softmax(O, dim=dim)
    Y = nn.functional.one_hot(y, W.shape[0]).double() if labels else torch.zeros_like(P)
    dO = sign * (P - Y) / (X.shape[0] if mean else 1)
    return (dO.T @ X64).to(X.dtype), dO.sum(0).to(X.dtype)


# --- values the visible checks ask for (t.ref) --------------------------------------------------


def _fans_of(shape):
    """(fan_in, fan_out) of a weight of `shape` (fan_out, fan_in)."""
    return shape[1], shape[0]


def _xavier_uniform_law(shape, gain):
    """U(-a, a) of xavier_uniform_: its bound and variance."""
    fan_in, fan_out = _fans_of(shape)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return {"bound": a, "var": a * a / 3}


def _xavier_normal_law(shape, gain):
    fan_in, fan_out = _fans_of(shape)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return {"var": std * std}


def _kaiming_normal_law(shape):
    fan_in, _ = _fans_of(shape)
    return {"var": 2.0 / fan_in}


def _init_weights_law(shape):
    """init_weights gives an nn.Linear's weight xavier_uniform_ with gain 1."""
    return _xavier_uniform_law(shape, 1.0)


def _net_and_loss(sizes, activation, params, dtype, nested, loss_name, loss_kwargs):
    return mlp(sizes, activation, params, dtype, nested), build_loss(loss_name, **loss_kwargs)


_NORMS: dict = {}  # the last few results, by the inputs' fingerprint (LIKELY asks again)


def _gradient_norms(sizes, activation, params, dtype, nested, X, y, loss_name, loss_kwargs,
                    stale=False):
    """layer_gradient_norms on the MLP `initialization.mlp` builds (stale grads are zeroed)."""
    key = wire.digest([sizes, activation, params, dtype, nested, X, y, loss_name, loss_kwargs])
    if key not in _NORMS:
        net, loss = _net_and_loss(sizes, activation, params, dtype, nested, loss_name,
                                  loss_kwargs)
        if len(_NORMS) > 16:
            _NORMS.clear()
        _NORMS[key] = layer_gradient_norms(net, X, y, loss)
    return list(_NORMS[key])


def _stale_norms(sizes, activation, params, dtype, nested, X, y, loss_name, loss_kwargs,
                 stale=False):
    """Norms of the weight gradients with the garbage of `initialization.fill_grads` added."""
    if not stale:
        return None
    net, loss = _net_and_loss(sizes, activation, params, dtype, nested, loss_name, loss_kwargs)
    fill_grads(net, 3.0)
    loss(net(X), y).mean().backward()
    return [m.weight.grad.norm().item() for m in net.modules() if isinstance(m, nn.Linear)]


def _scaled_norms(factor, power=1):
    return lambda *spec: [factor * r ** power for r in _gradient_norms(*spec)]


_SOFTMAX_GRAD_MISTAKES = {
    "the sum over examples, not the mean: the loss is the mean cross-entropy, so divide by n":
        dict(mean=False),
    "the sign is flipped: the gradient of the cross-entropy with respect to the logits is "
    "softmax(O) - onehot(y), not onehot(y) - softmax(O)": dict(sign=-1.0),
    "the bias b is left out of the logits O = X @ W.T + b": dict(bias=False),
    "the one-hot labels are not subtracted: dO = (softmax(O) - onehot(y)) / n": dict(labels=False),
    "the softmax is taken over the examples (dim=0); each row (example) is normalised over "
    "the classes, dim=1": dict(dim=0),
    "exp of the raw logits overflows (inf / inf = NaN) for large logits: subtract each row's "
    "maximum first, or use torch.softmax": dict(naive=True),
}

LIKELY = {
    "softmax_regression_grad_W": {
        cause: (lambda X, y, W, b, kw=kw: _softmax_grads(X, y, W, b, **kw)[0])
        for cause, kw in _SOFTMAX_GRAD_MISTAKES.items()},
    "softmax_regression_grad_b": {
        cause: (lambda X, y, W, b, kw=kw: _softmax_grads(X, y, W, b, **kw)[1])
        for cause, kw in _SOFTMAX_GRAD_MISTAKES.items()},
    "_xavier_uniform_law": {
        "the gain is missing (a = sqrt(6 / (fan_in + fan_out)), not multiplied by gain)":
            lambda shape, gain: 2.0 / sum(shape),
        "fan_in only: a = gain * sqrt(3 / fan_in) uses fan_in instead of (fan_in + fan_out) / 2":
            lambda shape, gain: gain ** 2 / shape[1],
        "fan_in only: a = gain * sqrt(6 / fan_in) uses fan_in instead of fan_in + fan_out":
            lambda shape, gain: 2 * gain ** 2 / shape[1],
        "the variance 2 / (fan_in + fan_out) is used as the standard deviation (a square root "
        "is missing)": lambda shape, gain: (gain * 6.0 / sum(shape)) ** 2 / 3,
        "the standard deviation is used as the bound: U(-std, std) has variance std**2 / 3; "
        "the bound is a = sqrt(3) * std": lambda shape, gain: gain ** 2 * 2.0 / sum(shape) / 3,
        "the gain is applied twice (or squared)": lambda shape, gain: gain ** 4 * 2.0 / sum(shape),
    },
    "_xavier_normal_law": {
        "the gain is missing (std = sqrt(2 / (fan_in + fan_out)), not multiplied by gain)":
            lambda shape, gain: 2.0 / sum(shape),
        "fan_in only: std = gain * sqrt(1 / fan_in) uses fan_in instead of "
        "(fan_in + fan_out) / 2": lambda shape, gain: gain ** 2 / shape[1],
        "fan_in only: std = gain * sqrt(2 / fan_in) uses fan_in instead of fan_in + fan_out":
            lambda shape, gain: 2 * gain ** 2 / shape[1],
        "the variance is used as the standard deviation (a square root is missing): "
        "torch.normal takes the std": lambda shape, gain: (gain * 2.0 / sum(shape)) ** 2,
        "the gain is applied twice (or squared)": lambda shape, gain: gain ** 4 * 2.0 / sum(shape),
    },
    "_kaiming_normal_law": {
        "fan_in is W.shape[1] for W of shape (fan_out, fan_in) (nn.Linear's convention); "
        "W.shape[0] is fan_out": lambda shape: 2.0 / shape[0],
        "the ReLU gain is missing: the variance is 2 / fan_in, not 1 / fan_in":
            lambda shape: 1.0 / shape[1],
        "the variance 2 / fan_in is used as the standard deviation (a square root is "
        "missing): torch.normal takes the std": lambda shape: (2.0 / shape[1]) ** 2,
        "Xavier's variance 2 / (fan_in + fan_out) instead of He's 2 / fan_in":
            lambda shape: 2.0 / sum(shape),
        "the gain sqrt(2) is applied twice: the variance is 2 / fan_in": lambda shape: 4.0 / shape[1],
    },
    "_init_weights_law": {
        "xavier_normal_ instead of xavier_uniform_": lambda shape: 2.0 / sum(shape),
        "kaiming (He) scale 2 / fan_in instead of Xavier's": lambda shape: 2.0 / shape[1],
    },
    "_gradient_norms": {
        "weight norms instead of gradient norms: take m.weight.grad.norm(), not m.weight.norm()":
            lambda sizes, act, params, *rest: [W.norm().item() for W, _ in params],
        "the loss is summed instead of averaged: backward of loss(net(X), y).mean()":
            lambda *spec: ([r * len(spec[5]) for r in _gradient_norms(*spec)]
                           if spec[8].get("reduction", "mean") == "none" else None),
        "squared norms (the Frobenius norm is the square root of the sum of squares)":
            _scaled_norms(1.0, 2),
        "gradient norms in reverse order (the order of the forward pass is asked)":
            lambda *spec: _gradient_norms(*spec)[::-1],
        "twice the expected norms: gradients of an earlier backward pass accumulated in .grad; "
        "zero the gradients (net.zero_grad()) before backward": _scaled_norms(2.0),
        "stale accumulated gradients: PyTorch adds the .grad of every backward pass to "
        "what is there, so zero the gradients (net.zero_grad()) before backward": _stale_norms,
    },
}


# --- xavier_uniform_ -----------------------------------------------------------------------


@CHAPTER.hidden("xavier_uniform_")
def hidden_xavier_uniform_(t, fn):
    for i, (shape, gain, dtype) in enumerate((
            ((100, 300), 2.0, torch.float32), ((200, 200), math.sqrt(2), torch.float64),
            ((50, 800), 5 / 3, torch.float32), ((1000, 40), 0.5, torch.float64))):
        with t.case(f"W {shape}, gain {gain:.3g}, {dtype}", weight=2):
            xavier_uniform_case(t, fn, shape, gain, dtype, 10 + i)
    with t.case("default gain = 1 and generator = None"):
        xavier_uniform_case(t, fn, (120, 250), 1.0, torch.float32, 0, pass_gain=False)
    reproducible(t, fn, lambda: blank(20, 30), lambda s: (1.0, gen(s)),
                 "xavier_uniform_(W, 1.0, generator=g)")
    parameter_case(t, fn, (1.0, gen(3)), "xavier_uniform_(W, 1.0, generator=g)")


# --- xavier_normal_ ------------------------------------------------------------------------


@CHAPTER.hidden("xavier_normal_")
def hidden_xavier_normal_(t, fn):
    for i, (shape, gain, dtype) in enumerate((
            ((100, 300), 2.0, torch.float64), ((200, 200), math.sqrt(2), torch.float32),
            ((40, 1000), 0.5, torch.float32))):
        with t.case(f"W {shape}, gain {gain:.3g}, {dtype}", weight=2):
            xavier_normal_case(t, fn, shape, gain, dtype, 20 + i)
    with t.case("default gain = 1 and generator = None"):
        xavier_normal_case(t, fn, (120, 250), 1.0, torch.float32, 0, pass_gain=False)
    reproducible(t, fn, lambda: blank(20, 30), lambda s: (1.0, gen(s)),
                 "xavier_normal_(W, 1.0, generator=g)")
    parameter_case(t, fn, (1.0, gen(3)), "xavier_normal_(W, 1.0, generator=g)")


# --- kaiming_normal_ -----------------------------------------------------------------------


@CHAPTER.hidden("kaiming_normal_")
def hidden_kaiming_normal_(t, fn):
    for i, (shape, dtype) in enumerate((((100, 400), torch.float64), ((256, 256), torch.float32),
                                        ((1000, 30), torch.float32))):
        with t.case(f"W {shape}, {dtype}", weight=2):
            kaiming_case(t, fn, shape, dtype, 30 + i)
    with t.case("generator = None by default"):
        kaiming_case(t, fn, (200, 150), torch.float32, 0, pass_gen=False)
    reproducible(t, fn, lambda: blank(20, 30), lambda s: (gen(s),),
                 "kaiming_normal_(W, generator=g)")
    parameter_case(t, fn, (gen(3),), "kaiming_normal_(W, generator=g)")


# --- init_weights --------------------------------------------------------------------------


@CHAPTER.hidden("init_weights")
def hidden_init_weights(t, init_weights_):
    with t.case("Linear layers without a bias (m.bias is None)"):
        init_weights_case(t, init_weights_, False, 1)
    with t.case("a called directly on one nn.Linear(64, 32) and on an nn.ReLU()"):
        layers = t.build("sequential", [("Linear", [64, 32], {}), ("ReLU", [], {})])
        lin, relu = layers.method("__getitem__", 0), layers.method("__getitem__", 1)
        t.call(init_weights_, lin, what="init_weights(nn.Linear(64, 32))",
               forbidden_python=NO_NN_INIT)
        t.call(init_weights_, relu, what="init_weights(nn.ReLU())")
        bias, weight = lin.bias, lin.weight
        if not torch.equal(bias.detach(), torch.zeros(32)):
            raise Mismatch("init_weights(nn.Linear(64, 32)) did not zero the bias\n"
                           "  likely cause: the bias is not zeroed")
        if weight.detach().abs().max() > math.sqrt(6 / 96) * (1 + 1e-5):
            raise Mismatch("init_weights(nn.Linear(64, 32)): weights beyond the Xavier bound "
                           "sqrt(6 / (64 + 32))")


# --- layer_gradient_norms ------------------------------------------------------------------


@CHAPTER.hidden("layer_gradient_norms")
def hidden_layer_gradient_norms(t, fn):
    X, y = randn(8, 4, seed=0, dtype=torch.float32), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    with t.case("stale gradients left in .grad by an earlier backward pass", weight=2):
        norm_case(t, fn, [6, 7, 7, 2], "ReLU", 2, randn(16, 6, seed=2, dtype=torch.float32),
                  torch.randint(0, 2, (16,), generator=gen(2)), CE[0], "a 6-7-7-2 ReLU MLP",
                  loss_kwargs=CE[1], stale=True)
    with t.case("a deep sigmoid net (10 layers), float64: norms fall towards the input"):
        norm_case(t, fn, [20] * 10 + [5], "Sigmoid", 3, randn(32, 20, seed=3),
                  torch.randint(0, 5, (32,), generator=gen(3)), CE[0], "a 10-layer sigmoid MLP",
                  loss_kwargs=CE[1], dtype=torch.float64)
    with t.case("mean squared error with reduction='none', regression targets"):
        norm_case(t, fn, [3, 8, 1], "Tanh", 4, randn(10, 3, seed=4, dtype=torch.float32),
                  randn(10, 1, seed=5, dtype=torch.float32), "MSELoss",
                  "a 3-8-1 tanh MLP and MSELoss(reduction='none')",
                  loss_kwargs={"reduction": "none"})
    with t.case("a loss that already averages (reduction='mean')"):
        norm_case(t, fn, [5, 6, 3], "ReLU", 6, randn(12, 5, seed=6, dtype=torch.float32),
                  torch.randint(0, 3, (12,), generator=gen(6)), "CrossEntropyLoss",
                  "a 5-6-3 ReLU MLP and CrossEntropyLoss()")
    with t.case("nested blocks: Sequential(Sequential(Linear, ReLU), Linear)"):
        norm_case(t, fn, [4, 6, 3], "ReLU", 7, X, y, CE[0], "a nested Sequential",
                  loss_kwargs=CE[1], nested=True, stale=True)


# --- softmax_regression_grad -----------------------------------------------------------------


REFERENCES = {"softmax_regression_grad": _softmax_grads}


@CHAPTER.hidden("softmax_regression_grad")
def hidden_softmax_regression_grad(t, fn):
    for i, (n, d, q, dtype, scale) in enumerate((
            (32, 6, 4, torch.float32, 0.5), (50, 10, 10, torch.float64, 0.3),
            (1, 3, 2, torch.float64, 1.0), (20, 4, 7, torch.float32, 1.0))):
        X = randn(n, d, seed=60 + i, dtype=dtype)
        y = torch.randint(0, q, (n,), generator=gen(70 + i))
        W, b = randn(q, d, seed=80 + i, dtype=dtype, scale=scale), randn(q, seed=90 + i,
                                                                         dtype=dtype)
        with t.case(f"{n} examples, {d} features, {q} classes, {dtype}"):
            softmax_grad_case(t, fn, X, y, W, b)
    with t.case("a constant start (every weight 0.3), float64: the rows of dW differ", weight=2):
        X = randn(40, 5, seed=64, dtype=torch.float64)
        y = torch.randint(0, 3, (40,), generator=gen(74))
        softmax_grad_case(t, fn, X, y, torch.full((3, 5), 0.3, dtype=torch.float64),
                          torch.zeros(3, dtype=torch.float64))
    with t.case("classes that no example has (labels 0-2 of 5 classes)"):
        X = randn(16, 4, seed=65, dtype=torch.float32)
        y = torch.randint(0, 3, (16,), generator=gen(75))
        softmax_grad_case(t, fn, X, y, randn(5, 4, seed=85, dtype=torch.float32),
                          torch.zeros(5))
    with t.case("large logits (in the thousands), float32: finite gradients", weight=2):
        X = randn(12, 6, seed=66, dtype=torch.float32, scale=20.0)
        y = torch.randint(0, 4, (12,), generator=gen(76))
        softmax_grad_case(t, fn, X, y, randn(4, 6, seed=86, dtype=torch.float32, scale=20.0),
                          randn(4, seed=96, dtype=torch.float32))
