"""07_backprop: forward and backward propagation by hand (D2L 5.3, CMU 11-785 HW1).

Instructor only: the references, the likely mistakes (`LIKELY`) and the hidden check of each
exercise; the visible checks are public (`grader.checks.backprop`).

Rows are examples; gradients follow the denominator layout (a gradient has its parameter's
shape). The students' layers may not use autograd; the checks use it as the oracle: every
intermediate is compared with PyTorch autograd on seeded float64 inputs, on non-square shapes
and on square ones (where a missing transpose still has the right shape), and gradient checks
by central differences test that a layer's backward agrees with its own forward.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from grader.cases import gen, randn, tol
from grader.checks.backprop import (
    CHAPTER,
    NO_AUTOGRAD,
    act_case,
    dt,
    linear_case,
    linear_layer,
    make,
    method,
    mlp_case,
    ng_call,
    ng_case,
    sce_case,
)
from grader.feedback import Mismatch, expect_tensor
from grader.probes.backprop import TestFunction

# --- references ---------------------------------------------------------------------------


class Linear:
    def __init__(self, in_features, out_features, generator=None):
        self.W = torch.randn(in_features, out_features, generator=generator) / math.sqrt(
            in_features)
        self.b = torch.zeros(out_features)

    def forward(self, A):
        self.A = A
        return A @ self.W + self.b

    def backward(self, dLdZ):
        self.dLdW = self.A.T @ dLdZ
        self.dLdb = dLdZ.sum(dim=0)
        return dLdZ @ self.W.T


class ReLU:
    def forward(self, Z):
        self.Z = Z
        return torch.clamp(Z, min=0)

    def backward(self, dLdA):
        return dLdA * (self.Z > 0).to(dLdA.dtype)


class Sigmoid:
    def forward(self, Z):
        self.A = torch.sigmoid(Z)
        return self.A

    def backward(self, dLdA):
        return dLdA * self.A * (1 - self.A)


class Tanh:
    def forward(self, Z):
        self.A = torch.tanh(Z)
        return self.A

    def backward(self, dLdA):
        return dLdA * (1 - self.A ** 2)


class SoftmaxCrossEntropy:
    def forward(self, logits, y):
        shifted = logits - logits.max(dim=1, keepdim=True).values
        log_probs = shifted - torch.log(torch.exp(shifted).sum(dim=1, keepdim=True))
        self.probs = torch.exp(log_probs)
        self.y = y
        return -log_probs[torch.arange(len(y)), y].mean()

    def backward(self):
        n = len(self.y)
        grad = self.probs.clone()
        grad[torch.arange(n), self.y] -= 1
        return grad / n


def mlp_l2_backward(X, y, W1, W2, lambd):
    n = X.shape[0]
    H = X @ W1
    A = torch.clamp(H, min=0)
    O = A @ W2
    P = torch.softmax(O, dim=1)
    dO = P.clone()
    dO[torch.arange(n), y] -= 1
    dO = dO / n
    dW2 = A.T @ dO + lambd * W2
    dH = (dO @ W2.T) * (H > 0).to(X.dtype)
    dW1 = X.T @ dH + lambd * W1
    return dW1, dW2


def numerical_gradient(f, x, h=1e-5):
    grad = torch.zeros_like(x)
    flat = grad.view(-1)
    for i in range(x.numel()):
        e = torch.zeros_like(x).view(-1)
        e[i] = h
        e = e.view(x.shape)
        flat[i] = (float(f(x + e)) - float(f(x - e))) / (2 * h)
    return grad


def _mlp_objective(X, y, W1, W2, lambd):
    return F.cross_entropy(torch.relu(X @ W1) @ W2, y) + lambd / 2 * (
        (W1 ** 2).sum() + (W2 ** 2).sum())


def _autograd(fn, inputs, upstream):
    """Gradients of sum(fn(*inputs) * upstream) with respect to every input (float64 copies)."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*leaves)
    grads = torch.autograd.grad(out, leaves, upstream, allow_unused=True)
    return out.detach(), [g if g is not None else torch.zeros_like(x)
                          for g, x in zip(grads, leaves)]


def _central(f, x, h=1e-6):
    """Central differences of scalar f at x (the grader's own; float64)."""
    grad = torch.zeros_like(x)
    for i in range(x.numel()):
        e = torch.zeros(x.numel(), dtype=x.dtype)
        e[i] = h
        e = e.reshape(x.shape)
        grad.view(-1)[i] = (float(f(x + e)) - float(f(x - e))) / (2 * h)
    return grad


def _linear_grads(A, W, b, dLdZ):
    """(Z, dL/dA, dL/dW, dL/db) for L = sum((A @ W + b) * dLdZ), by autograd."""
    Z, (gA, gW, gb) = _autograd(lambda A_, W_, b_: A_ @ W_ + b_, (A, W, b), dLdZ)
    return Z, gA, gW, gb


_ACT_FN = {"ReLU": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh}


def _act_grads(name):
    def grads(Z, G):
        A, (gZ,) = _autograd(_ACT_FN[name], (Z,), G)
        return A, gZ
    return grads


def _sce_grads(logits, y):
    L, (g,) = _autograd(lambda x: F.cross_entropy(x, y), (logits,),
                        torch.tensor(1.0, dtype=logits.dtype))
    return L, g


def _mlp_autograd(X, y, W1, W2, lambd):
    A, B = W1.detach().clone().requires_grad_(), W2.detach().clone().requires_grad_()
    return torch.autograd.grad(_mlp_objective(X, y, A, B, lambd), (A, B))


def _mlp_wrong_mask(X, y, W1, W2, lambd):
    n = X.shape[0]
    A = torch.relu(X @ W1)
    P = torch.softmax(A @ W2, 1)
    dO = (P - F.one_hot(y, W2.shape[1]).to(X.dtype)) / n
    dA = dO @ W2.T
    return X.T @ (dA * (dA > 0).to(X.dtype)) + lambd * W1, A.T @ dO + lambd * W2


def _ng_expected(kind, coef, x, h, returns_float=False):
    """numerical_gradient of the test function (grader.probes.backprop) at x."""
    return numerical_gradient(TestFunction(kind, coef, x.shape, returns_float), x, h)


def _forward_differences(kind, coef, x, h, returns_float=False):
    f = TestFunction(kind, coef, x.shape, returns_float)
    g = torch.zeros_like(x)
    f0 = float(f(x))
    for i in range(x.numel()):
        e = torch.zeros_like(x).reshape(-1)
        e[i] = h
        g.reshape(-1)[i] = (float(f(x + e.reshape(x.shape))) - f0) / h
    return g


REFERENCES = {
    "Linear.grads": _linear_grads,
    "ReLU.grads": _act_grads("ReLU"),
    "Sigmoid.grads": _act_grads("Sigmoid"),
    "Tanh.grads": _act_grads("Tanh"),
    "SoftmaxCrossEntropy.grads": _sce_grads,
    "mlp_l2_backward.grads": _mlp_autograd,
    "numerical_gradient.expected": _ng_expected,
}


# --- likely mistakes: cause -> the buggy function, of the same arguments as the reference ------


def _sce_P(logits):
    return torch.softmax(logits, 1)


def _onehot(logits, y):
    return F.one_hot(y, logits.shape[1]).to(logits.dtype)


def _mlp_variants():
    """{cause: (dW1, dW2) that mistake returns}, of (X, y, W1, W2, lambd)."""
    def data(X, y, W1, W2):
        return _mlp_autograd(X, y, W1, W2, 0.0)

    def scaled(X, y, W1, W2, lambd, c):
        d1, d2 = data(X, y, W1, W2)
        return d1 + c * lambd * W1, d2 + c * lambd * W2

    def not_divided(X, y, W1, W2, lambd):
        b1, b2 = mlp_l2_backward(X, y, W1, W2, 0.0)
        n = X.shape[0]
        return b1 * n + lambd * W1, b2 * n + lambd * W2

    def transposed(X, y, W1, W2, lambd):
        g1, g2 = _mlp_autograd(X, y, W1, W2, lambd)
        return g1.T, g2.T

    return {
        "the regulariser is missing: d/dW of lambd/2 * sum(W**2) is lambd * W":
            lambda X, y, W1, W2, lambd: tuple(data(X, y, W1, W2)),
        "the regulariser is doubled: d/dW of lambd/2 * sum(W**2) is lambd * W, not 2 lambd W":
            lambda X, y, W1, W2, lambd: scaled(X, y, W1, W2, lambd, 2.0),
        "the regulariser is halved: d/dW of lambd/2 * sum(W**2) is lambd * W":
            lambda X, y, W1, W2, lambd: scaled(X, y, W1, W2, lambd, 0.5),
        "the gradient is not divided by the batch size n (J uses the mean cross-entropy)":
            not_divided,
        "relu'(H) applied to the wrong tensor: the mask is H = X @ W1 > 0": _mlp_wrong_mask,
        "transposed gradients: in the denominator layout dJ/dW1 has W1's shape and dJ/dW2 "
        "W2's (this only shows in the values when W is square)": transposed,
    }


LIKELY = {
    "Linear.Z": {
        "the bias is not added": lambda A, W, b, dLdZ: A @ W,
        "W is transposed (A @ W.T)": lambda A, W, b, dLdZ: A @ W.T + b,
    },
    "Linear.dLdA": {
        "missing transpose in dLdA: dLdZ @ W instead of dLdZ @ W.T":
            lambda A, W, b, dLdZ: dLdZ @ W,
        "dLdA divided by the batch size (the 1/n belongs to the loss only)":
            lambda A, W, b, dLdZ: _linear_grads(A, W, b, dLdZ)[1] / A.shape[0],
    },
    "Linear.dLdW": {
        "transposed dLdW: dLdZ.T @ A instead of A.T @ dLdZ (on a square W the shape is right "
        "but the values are transposed)": lambda A, W, b, dLdZ: dLdZ.T @ A,
        "dLdW divided by the batch size: the layer sums over examples (the 1/n is already in "
        "dLdZ from the mean loss)": lambda A, W, b, dLdZ: _linear_grads(A, W, b, dLdZ)[2]
        / A.shape[0],
    },
    "Linear.dLdb": {
        "dLdb as a mean over the batch: sum it (dLdZ.sum(dim=0)); the 1/n is already in dLdZ "
        "from the mean loss": lambda A, W, b, dLdZ: dLdZ.mean(0),
        "dLdb summed over the wrong axis": lambda A, W, b, dLdZ: dLdZ.sum(1),
    },
    "ReLU.dLdZ": {
        "the upstream gradient is not multiplied in: dLdZ = dLdA * relu'(Z) (chain rule)":
            lambda Z, G: (Z > 0).to(Z.dtype),
        "relu'(0) should be 0 (Z > 0, not Z >= 0), as in PyTorch":
            lambda Z, G: G * (Z >= 0).to(Z.dtype),
        "the mask comes from dLdA instead of Z (relu(dLdA))": lambda Z, G: torch.relu(G),
    },
    "Sigmoid.dLdZ": {
        "sigmoid backward without (1 - A): sigmoid'(Z) = A * (1 - A)":
            lambda Z, G: G * torch.sigmoid(Z),
        "the upstream gradient is not multiplied in: dLdZ = dLdA * A * (1 - A) (chain rule)":
            lambda Z, G: torch.sigmoid(Z) * (1 - torch.sigmoid(Z)),
        "the derivative uses Z instead of A = sigmoid(Z): Z * (1 - Z)":
            lambda Z, G: G * Z * (1 - Z),
    },
    "Tanh.dLdZ": {
        "tanh backward as 1 - A instead of 1 - A**2": lambda Z, G: G * (1 - torch.tanh(Z)),
        "the upstream gradient is not multiplied in: dLdZ = dLdA * (1 - A**2) (chain rule)":
            lambda Z, G: 1 - torch.tanh(Z) ** 2,
        "the derivative uses Z instead of A = tanh(Z): 1 - Z**2": lambda Z, G: G * (1 - Z ** 2),
    },
    "SoftmaxCrossEntropy.L": {
        "a sum over the batch instead of the mean":
            lambda logits, y: F.cross_entropy(logits, y, reduction="sum"),
        "the log is missing (mean of the probability of the true class)":
            lambda logits, y: -(_sce_P(logits) * _onehot(logits, y)).sum(1).mean(),
    },
    "SoftmaxCrossEntropy.dL": {
        "gradient not divided by the batch size: the loss is the mean over examples, so "
        "dL/dlogits = (softmax - one_hot) / n": lambda logits, y: _sce_P(logits)
        - _onehot(logits, y),
        "the one-hot labels are not subtracted: (softmax - one_hot) / n":
            lambda logits, y: _sce_P(logits) / len(y),
        "the sign is flipped: (softmax - one_hot) / n, not (one_hot - softmax)":
            lambda logits, y: (_onehot(logits, y) - _sce_P(logits)) / len(y),
    },
    "mlp_l2_backward": _mlp_variants(),
    "numerical_gradient.expected": {
        "forward differences (f(x + h) - f(x)) / h: their error is O(h); central differences "
        "(f(x + h) - f(x - h)) / (2 h) have an error of O(h**2)": _forward_differences,
        "not divided by 2 h: central differences are (f(x + h) - f(x - h)) / (2 h)":
            lambda kind, coef, x, h, returns_float=False:
            _ng_expected(kind, coef, x, h, returns_float) * 2,
        "h is ignored (a fixed step is used)":
            lambda kind, coef, x, h, returns_float=False:
            _ng_expected(kind, coef, x, 1e-5, returns_float) if h != 1e-5 else None,
    },
}


# --- hidden checks: Linear ------------------------------------------------------------------


def _linear_last_forward(t, cls):
    layer = linear_layer(t, cls, 3, 2, 50)
    W, b = randn(3, 2, seed=51), randn(2, seed=52)
    layer.W, layer.b = W.clone(), b.clone()
    A1, A2, dLdZ = randn(4, 3, seed=53), randn(4, 3, seed=54), randn(4, 2, seed=55)
    label = "Linear(3, 2): forward(A1), forward(A2), then backward(dLdZ)"
    forward, backward = method(layer, "forward", label), method(layer, "backward", label)
    t.call(forward, A1, what=label, forbidden=NO_AUTOGRAD)
    t.call(forward, A2, what=label, forbidden=NO_AUTOGRAD)
    t.call(backward, dLdZ, what=label, forbidden=NO_AUTOGRAD)
    expect_tensor(getattr(layer, "dLdW", None), A2.T @ dLdZ, what=f"{label}: dLdW",
                  likely={"the input of the first forward is used, not that of the last":
                          lambda: A1.T @ dLdZ}, **tol(torch.float64, 10))


def _linear_gradcheck(t, cls):
    """dLdW, dLdb and dLdA of backward agree with central differences of the layer's forward
    (about 100 calls into the kernel: one per perturbed entry, and one to set W or b)."""
    layer = linear_layer(t, cls, 4, 3, 60)
    W, b = randn(4, 3, seed=61), randn(3, seed=62)
    A, G = randn(5, 4, seed=63), randn(5, 3, seed=64)
    label = "gradient check of Linear(4, 3) with L = sum(forward(A) * G)"
    forward, backward = method(layer, "forward", label), method(layer, "backward", label)

    def loss_W(W_):
        layer.W = W_
        return float((forward(A) * G).sum())

    def loss_b(b_):
        layer.b = b_
        return float((forward(A) * G).sum())

    def loss_A(A_):
        return float((forward(A_) * G).sum())

    layer.W, layer.b = W.clone(), b.clone()
    num_W = t.call(lambda: _central(loss_W, W), what=f"{label}: forward", forbidden=NO_AUTOGRAD)
    layer.W = W.clone()
    num_b = t.call(lambda: _central(loss_b, b), what=f"{label}: forward", forbidden=NO_AUTOGRAD)
    layer.b = b.clone()
    num_A = t.call(lambda: _central(loss_A, A), what=f"{label}: forward", forbidden=NO_AUTOGRAD)
    t.call(forward, A, what=f"{label}: forward", forbidden=NO_AUTOGRAD)
    dLdA = t.call(backward, G, what=f"{label}: backward", forbidden=NO_AUTOGRAD)
    for name, got, num in (("dLdW", getattr(layer, "dLdW", None), num_W),
                           ("dLdb", getattr(layer, "dLdb", None), num_b), ("dLdA", dLdA, num_A)):
        expect_tensor(got, num, what=f"{label}: {name} against central differences of your "
                      "forward", atol=1e-6, rtol=1e-6)


@CHAPTER.hidden("Linear")
def hidden_Linear(t, cls):
    for k, ((n, i, o), dtype) in enumerate(itertools.product(
            ((5, 3, 3), (4, 4, 4), (1, 6, 2), (7, 2, 5), (64, 10, 10)), (torch.float64,
                                                                        torch.float32))):
        with t.case(f"A ({n}, {i}), W ({i}, {o}), {dt(dtype)}"):
            linear_case(t, cls, n, i, o, dtype, 10 * (k + 1))
    with t.case("backward uses the input of the last forward"):
        _linear_last_forward(t, cls)
    with t.case("gradient check by central differences", weight=2):
        _linear_gradcheck(t, cls)
    with t.case("the constructor: shapes, float32, reproducible from the generator"):
        a, b_ = linear_layer(t, cls, 6, 4, 1), linear_layer(t, cls, 6, 4, 1)
        c = linear_layer(t, cls, 6, 4, 2)
        Wa, Wb, Wc = a.W, b_.W, c.W
        if Wa.dtype != torch.float32:
            raise Mismatch(f"Linear(6, 4).W has dtype {Wa.dtype}, expected torch.float32")
        if not torch.equal(Wa, Wb):
            raise Mismatch("Linear(6, 4, generator=g): generators of the same seed gave "
                           "different W\n  likely cause: W drawn without generator=generator")
        if torch.equal(Wa, Wc) or Wa.unique().numel() == 1:
            raise Mismatch("Linear(6, 4, generator=g): W is not random (the same for every "
                           "seed, or constant); a constant W keeps every unit identical")


# --- hidden checks: activations -------------------------------------------------------------


def _act_last_forward(t, name, cls):
    fn = _ACT_FN[name]
    layer = make(t, cls, (), f"{name}()")
    Z1, Z2, G = randn(3, 4, seed=80), randn(3, 4, seed=81), randn(3, 4, seed=82)
    what = f"{name}(): forward(Z1), forward(Z2), then backward(dLdA)"
    forward, backward = method(layer, "forward", what), method(layer, "backward", what)
    t.call(forward, Z1, what=what, forbidden=NO_AUTOGRAD)
    t.call(forward, Z2, what=what, forbidden=NO_AUTOGRAD)
    got = t.call(backward, G, what=what, forbidden=NO_AUTOGRAD)
    _, (g2,) = _autograd(fn, (Z2,), G)
    _, (g1,) = _autograd(fn, (Z1,), G)
    expect_tensor(got, g2, what=what, likely={"the state of the first forward is used, not "
                                              "that of the last": lambda: g1},
                  **tol(torch.float64, 10))


def _act_gradcheck(t, name, cls):
    """backward against central differences of the layer's own forward (30 forward calls)."""
    layer = make(t, cls, (), f"{name}()")
    Z, G = randn(3, 5, seed=90) * 2, randn(3, 5, seed=91)
    Z = torch.where(Z.abs() < 1e-3, Z + 0.01, Z)  # away from relu's kink
    what = f"gradient check of {name}() with L = sum(forward(Z) * dLdA)"
    forward, backward = method(layer, "forward", what), method(layer, "backward", what)
    num = t.call(lambda: _central(lambda z: float((forward(z) * G).sum()), Z),
                 what=f"{what}: forward", forbidden=NO_AUTOGRAD)
    t.call(forward, Z, what=what, forbidden=NO_AUTOGRAD)
    got = t.call(backward, G, what=what, forbidden=NO_AUTOGRAD)
    expect_tensor(got, num, what=f"{what}: backward against central differences of your forward",
                  atol=1e-6, rtol=1e-6)


def _act_hidden(t, name, cls):
    for k, (shape, dtype) in enumerate(itertools.product(((5, 3), (4, 4), (1, 7), (64, 10)),
                                                         (torch.float64, torch.float32))):
        with t.case(f"Z {shape} {dt(dtype)}"):
            act_case(t, name, cls, randn(*shape, seed=k, dtype=dtype) * 2,
                     randn(*shape, seed=100 + k, dtype=dtype), "random")
    with t.case("large |Z| (up to 800): no overflow to NaN"):
        Z = torch.tensor([[-800.0, -50.0, 0.5, 50.0, 800.0]], dtype=torch.float64)
        act_case(t, name, cls, Z, torch.ones_like(Z), "large inputs")
    if name == "ReLU":
        with t.case("Z = 0 exactly: relu'(0) = 0, as in PyTorch"):
            Z = torch.tensor([[0.0, 1.0, -1.0], [0.0, 0.0, 2.0]], dtype=torch.float64)
            act_case(t, name, cls, Z, torch.full_like(Z, 2.0), "zeros")
    with t.case("backward uses the last forward"):
        _act_last_forward(t, name, cls)
    with t.case("gradient check by central differences", weight=2):
        _act_gradcheck(t, name, cls)


@CHAPTER.hidden("ReLU")
def hidden_ReLU(t, cls):
    _act_hidden(t, "ReLU", cls)


@CHAPTER.hidden("Sigmoid")
def hidden_Sigmoid(t, cls):
    _act_hidden(t, "Sigmoid", cls)


@CHAPTER.hidden("Tanh")
def hidden_Tanh(t, cls):
    _act_hidden(t, "Tanh", cls)


# --- hidden checks: SoftmaxCrossEntropy -----------------------------------------------------


@CHAPTER.hidden("SoftmaxCrossEntropy")
def hidden_SoftmaxCrossEntropy(t, cls):
    for k, ((n, q), dtype) in enumerate(itertools.product(((5, 3), (4, 4), (1, 10), (64, 10)),
                                                          (torch.float64, torch.float32))):
        with t.case(f"logits ({n}, {q}) {dt(dtype)}"):
            sce_case(t, cls, randn(n, q, seed=k, dtype=dtype) * 3,
                     torch.randint(0, q, (n,), generator=gen(k)), "random")
    with t.case("large logits (up to 1000): stable, no NaN or inf", weight=2):
        big = randn(6, 4, seed=40) * 1000
        sce_case(t, cls, big, torch.tensor([0, 1, 2, 3, 0, 1]),
                 "large: subtract each row's max before exp")
    with t.case("gradient check by central differences"):
        layer = make(t, cls, (), "SoftmaxCrossEntropy()")
        logits, y = randn(3, 4, seed=41), torch.tensor([3, 0, 1])
        what = "gradient check of SoftmaxCrossEntropy()"
        forward, backward = method(layer, "forward", what), method(layer, "backward", what)
        num = t.call(lambda: _central(lambda z: float(forward(z, y)), logits),
                     what=f"{what}: forward", forbidden=NO_AUTOGRAD)
        t.call(forward, logits, y, what=f"{what}: forward", forbidden=NO_AUTOGRAD)
        got = t.call(backward, what=f"{what}: backward()", forbidden=NO_AUTOGRAD)
        expect_tensor(got, num, what="backward() against central differences of your forward",
                      atol=1e-6, rtol=1e-6)


# --- hidden checks: mlp_l2_backward ---------------------------------------------------------


@CHAPTER.hidden("mlp_l2_backward")
def hidden_mlp_l2_backward(t, fn):
    for k, ((n, d, h, q), lambd, dtype) in enumerate((
            ((8, 4, 6, 3), 0.01, torch.float64), ((5, 5, 5, 5), 0.5, torch.float64),
            ((1, 3, 4, 2), 1.0, torch.float64), ((32, 10, 16, 10), 0.05, torch.float32),
            ((6, 4, 4, 4), 0.2, torch.float32), ((10, 3, 7, 4), 0.0, torch.float64))):
        with t.case(f"X ({n}, {d}), W1 ({d}, {h}), W2 ({h}, {q}), lambd {lambd}, {dt(dtype)}"):
            mlp_case(t, fn, n, d, h, q, lambd, dtype, 10 * (k + 1))


# --- hidden checks: numerical_gradient ------------------------------------------------------


@CHAPTER.hidden("numerical_gradient")
def hidden_numerical_gradient(t, fn):
    for k, shape in enumerate(((5,), (3, 3), (2, 3, 2), (1, 7))):
        with t.case(f"x of shape {shape}, h = 1e-3"):
            ng_case(t, fn, randn(*shape, seed=k), 1e-3, "random")
    with t.case("the default h = 1e-5"):
        ng_case(t, fn, randn(4, 2, seed=20), 1e-5, "default h", pass_h=False)
    with t.case("f returns a Python float"):
        ng_case(t, fn, randn(3, 2, seed=21), 1e-4, "float f", returns_float=True)
    with t.case("a gradient check: matches the analytic gradient of a quadratic form"):
        M = randn(4, 4, seed=22)
        x = randn(4, seed=23)
        got = ng_call(t, fn, "quadratic", M, x.clone(), 1e-4, "numerical_gradient(z @ M @ z)")
        expect_tensor(got, (M + M.T) @ x, what="numerical_gradient(f, x) for f(x) = x^T M x "
                      "(gradient (M + M^T) x)", atol=1e-6, rtol=1e-6)
