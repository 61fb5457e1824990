"""07_backprop: forward and backward propagation by hand (D2L 5.3, CMU 11-785 HW1).

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
from grader.feedback import Mismatch, expect_pair, expect_tensor, fmt_value
from grader.registry import Chapter

CHAPTER = Chapter("07_backprop", "Forward and backward propagation by hand")

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


# --- shared pieces of the checks -----------------------------------------------------------

NO_AUTOGRAD = {torch.Tensor.backward: "Tensor.backward", torch.autograd.grad: "torch.autograd.grad",
               torch.autograd.backward: "torch.autograd.backward",
               torch.Tensor.requires_grad_: "Tensor.requires_grad_"}


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


def _make(t, cls, args, what):
    return t.call(cls, *args, what=what)


def _method(obj, name, what):
    m = getattr(obj, name, None)
    if not callable(m):
        raise Mismatch(f"{what} has no method `{name}`; the layer needs `{name}`")
    return m


def _shape_hint(got, expected, what, transposed_cause):
    if isinstance(got, torch.Tensor) and isinstance(expected, torch.Tensor) \
            and got.dim() == 2 and tuple(got.shape) == tuple(expected.shape)[::-1] \
            and got.shape != expected.shape:
        raise Mismatch(f"{what} has shape {tuple(got.shape)}, expected {tuple(expected.shape)} "
                       "(denominator layout: a gradient has the shape of what it is the gradient "
                       f"with respect to)\n  likely cause: {transposed_cause}")


def _dt(dtype):
    return str(dtype).replace("torch.", "")


# --- Linear --------------------------------------------------------------------------------


def _linear_layer(t, cls, i, o, seed):
    what = f"Linear({i}, {o}, generator=g)"
    layer = _make(t, cls, (i, o, gen(seed)), what)
    for name, shape in (("W", (i, o)), ("b", (o,))):
        v = getattr(layer, name, None)
        if not isinstance(v, torch.Tensor):
            raise Mismatch(f"{what} should have an attribute `{name}` (a tensor of shape {shape}), "
                           f"but it is {fmt_value(v)}")
        if tuple(v.shape) != shape:
            hint = ("\n  likely cause: W in nn.Linear's (out, in) layout; here W is "
                    "(in_features, out_features) so that forward is A @ W + b"
                    if name == "W" and tuple(v.shape) == (o, i) else "")
            raise Mismatch(f"{what}.{name} has shape {tuple(v.shape)}, expected {shape}{hint}")
    return layer


def _linear_case(t, cls, n, i, o, dtype, seed):
    layer = _linear_layer(t, cls, i, o, seed)
    W, b = randn(i, o, seed=seed + 1, dtype=dtype), randn(o, seed=seed + 2, dtype=dtype)
    A, dLdZ = randn(n, i, seed=seed + 3, dtype=dtype), randn(n, o, seed=seed + 4, dtype=dtype)
    layer.W, layer.b = W.clone(), b.clone()
    label = f"Linear({i}, {o}) on A ({n}, {i}) {_dt(dtype)}"
    Z_ref, (gA, gW, gb) = _autograd(lambda A_, W_, b_: A_ @ W_ + b_, (A, W, b), dLdZ)
    k = tol(dtype, 10 * max(n, i, o))
    Z = t.call(_method(layer, "forward", label), A, what=f"{label}: forward(A)",
               forbidden=NO_AUTOGRAD)
    expect_tensor(Z, Z_ref, what=f"{label}: forward(A)", inputs={"A": A, "W": W, "b": b},
                  likely={"the bias is not added": lambda: A @ W,
                          "W is transposed (A @ W.T)": lambda: A @ W.T + b}, **k)
    dLdA = t.call(_method(layer, "backward", label), dLdZ, what=f"{label}: backward(dLdZ)",
                  forbidden=NO_AUTOGRAD)
    expect_tensor(dLdA, gA, what=f"dLdA returned by {label}: backward(dLdZ)",
                  inputs={"dLdZ": dLdZ, "W": W},
                  likely={"missing transpose in dLdA: dLdZ @ W instead of dLdZ @ W.T":
                          lambda: dLdZ @ W,
                          "dLdA divided by the batch size (the 1/n belongs to the loss only)":
                          lambda: gA / n}, **k)
    for name, ref in (("dLdW", gW), ("dLdb", gb)):
        got = getattr(layer, name, None)
        if got is None:
            raise Mismatch(f"{label}: after backward, the layer has no attribute `{name}`\n"
                           f"  likely cause: backward should set self.{name}")
        if name == "dLdW":
            _shape_hint(got, ref, f"{label}: dLdW", "transposed dLdW: dLdZ.T @ A instead of "
                        "A.T @ dLdZ")
            likely = {"transposed dLdW: dLdZ.T @ A instead of A.T @ dLdZ (on a square W the "
                      "shape is right but the values are transposed)": lambda: dLdZ.T @ A,
                      "dLdW divided by the batch size: the layer sums over examples (the 1/n "
                      "is already in dLdZ from the mean loss)": lambda: gW / n}
        else:
            if isinstance(got, torch.Tensor) and tuple(got.shape) == (n, o) and n != 1:
                raise Mismatch(f"{label}: dLdb has shape {tuple(got.shape)}, expected ({o},)\n"
                               "  likely cause: dLdb is not summed over the batch (every example "
                               "adds its own contribution: dLdZ.sum(dim=0))")
            likely = {"dLdb as a mean over the batch: sum it (dLdZ.sum(dim=0)); the 1/n is "
                      "already in dLdZ from the mean loss": lambda: dLdZ.mean(0),
                      "dLdb summed over the wrong axis": lambda: dLdZ.sum(1)}
        if isinstance(got, torch.Tensor) and name == "dLdb" and tuple(got.shape) == (1, o):
            raise Mismatch(f"{label}: dLdb has shape (1, {o}), expected ({o},) (b's shape)\n"
                           "  likely cause: keepdim=True in the sum")
        expect_tensor(got, ref, what=f"{label}: {name} after backward(dLdZ)",
                      inputs={"A": A, "dLdZ": dLdZ}, likely=likely, **k)
    if not (torch.equal(layer.W, W) and torch.equal(layer.b, b)):
        raise Mismatch(f"{label}: backward changed W or b; it should only compute gradients "
                       "(the optimiser updates the parameters)")


def _linear_last_forward(t, cls):
    layer = _linear_layer(t, cls, 3, 2, 50)
    W, b = randn(3, 2, seed=51), randn(2, seed=52)
    layer.W, layer.b = W.clone(), b.clone()
    A1, A2, dLdZ = randn(4, 3, seed=53), randn(4, 3, seed=54), randn(4, 2, seed=55)
    label = "Linear(3, 2): forward(A1), forward(A2), then backward(dLdZ)"
    forward, backward = _method(layer, "forward", label), _method(layer, "backward", label)
    t.call(forward, A1, what=label, forbidden=NO_AUTOGRAD)
    t.call(forward, A2, what=label, forbidden=NO_AUTOGRAD)
    t.call(backward, dLdZ, what=label, forbidden=NO_AUTOGRAD)
    expect_tensor(getattr(layer, "dLdW", None), A2.T @ dLdZ, what=f"{label}: dLdW",
                  likely={"the input of the first forward is used, not that of the last":
                          lambda: A1.T @ dLdZ}, **tol(torch.float64, 10))


def _linear_gradcheck(t, cls):
    """dLdW, dLdb and dLdA of backward agree with central differences of the layer's forward."""
    layer = _linear_layer(t, cls, 4, 3, 60)
    W, b = randn(4, 3, seed=61), randn(3, seed=62)
    A, G = randn(5, 4, seed=63), randn(5, 3, seed=64)
    label = "gradient check of Linear(4, 3) with L = sum(forward(A) * G)"
    forward, backward = _method(layer, "forward", label), _method(layer, "backward", label)

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
    num_b = t.call(lambda: _central(loss_b, b), what=f"{label}: forward")
    layer.b = b.clone()
    num_A = t.call(lambda: _central(loss_A, A), what=f"{label}: forward")
    t.call(forward, A, what=f"{label}: forward", forbidden=NO_AUTOGRAD)
    dLdA = t.call(backward, G, what=f"{label}: backward", forbidden=NO_AUTOGRAD)
    for name, got, num in (("dLdW", getattr(layer, "dLdW", None), num_W),
                           ("dLdb", getattr(layer, "dLdb", None), num_b), ("dLdA", dLdA, num_A)):
        expect_tensor(got, num, what=f"{label}: {name} against central differences of your "
                      "forward", atol=1e-6, rtol=1e-6)


@CHAPTER.exercise("Linear", points=3)
def check_Linear(t, cls):
    with t.case("worked example: Linear(3, 2) on a batch of 4, float64", weight=2):
        _linear_case(t, cls, 4, 3, 2, torch.float64, 0)
    if not t.hidden:
        return
    for k, ((n, i, o), dtype) in enumerate(itertools.product(
            ((5, 3, 3), (4, 4, 4), (1, 6, 2), (7, 2, 5), (64, 10, 10)), (torch.float64,
                                                                        torch.float32))):
        with t.case(f"A ({n}, {i}), W ({i}, {o}), {_dt(dtype)}"):
            _linear_case(t, cls, n, i, o, dtype, 10 * (k + 1))
    with t.case("backward uses the input of the last forward"):
        _linear_last_forward(t, cls)
    with t.case("gradient check by central differences", weight=2):
        _linear_gradcheck(t, cls)
    with t.case("the constructor: shapes, float32, reproducible from the generator"):
        a, b_ = _linear_layer(t, cls, 6, 4, 1), _linear_layer(t, cls, 6, 4, 1)
        c = _linear_layer(t, cls, 6, 4, 2)
        if a.W.dtype != torch.float32:
            raise Mismatch(f"Linear(6, 4).W has dtype {a.W.dtype}, expected torch.float32")
        if not torch.equal(a.W, b_.W):
            raise Mismatch("Linear(6, 4, generator=g): generators of the same seed gave "
                           "different W\n  likely cause: W drawn without generator=generator")
        if torch.equal(a.W, c.W) or a.W.unique().numel() == 1:
            raise Mismatch("Linear(6, 4, generator=g): W is not random (the same for every "
                           "seed, or constant); a constant W keeps every unit identical")


# --- activations ---------------------------------------------------------------------------

ACTS = {
    "ReLU": (torch.relu, {
        "the upstream gradient is not multiplied in: dLdZ = dLdA * relu'(Z) (chain rule)":
            lambda Z, G: (Z > 0).to(Z.dtype),
        "relu'(0) should be 0 (Z > 0, not Z >= 0), as in PyTorch":
            lambda Z, G: G * (Z >= 0).to(Z.dtype),
        "the mask comes from dLdA instead of Z (relu(dLdA))": lambda Z, G: torch.relu(G),
    }),
    "Sigmoid": (torch.sigmoid, {
        "sigmoid backward without (1 - A): sigmoid'(Z) = A * (1 - A)":
            lambda Z, G: G * torch.sigmoid(Z),
        "the upstream gradient is not multiplied in: dLdZ = dLdA * A * (1 - A) (chain rule)":
            lambda Z, G: torch.sigmoid(Z) * (1 - torch.sigmoid(Z)),
        "the derivative uses Z instead of A = sigmoid(Z): Z * (1 - Z)":
            lambda Z, G: G * Z * (1 - Z),
    }),
    "Tanh": (torch.tanh, {
        "tanh backward as 1 - A instead of 1 - A**2": lambda Z, G: G * (1 - torch.tanh(Z)),
        "the upstream gradient is not multiplied in: dLdZ = dLdA * (1 - A**2) (chain rule)":
            lambda Z, G: 1 - torch.tanh(Z) ** 2,
        "the derivative uses Z instead of A = tanh(Z): 1 - Z**2": lambda Z, G: G * (1 - Z ** 2),
    }),
}


def _act_case(t, name, cls, Z, G, label):
    fn, causes = ACTS[name]
    what = f"{name}() on Z {tuple(Z.shape)} {_dt(Z.dtype)} ({label})"
    layer = _make(t, cls, (), f"{name}()")
    A_ref, (gZ,) = _autograd(fn, (Z,), G)
    A = t.call(_method(layer, "forward", what), Z, what=f"{what}: forward(Z)",
               forbidden=NO_AUTOGRAD)
    k = tol(Z.dtype, 10)
    expect_tensor(A, A_ref, what=f"{what}: forward(Z)", inputs={"Z": Z}, **k)
    dLdZ = t.call(_method(layer, "backward", what), G, what=f"{what}: backward(dLdA)",
                  forbidden=NO_AUTOGRAD)
    expect_tensor(dLdZ, gZ, what=f"{what}: backward(dLdA)", inputs={"Z": Z, "dLdA": G},
                  likely={c: (lambda f=f: f(Z, G)) for c, f in causes.items()}, **k)


def _act_last_forward(t, name, cls):
    fn, _ = ACTS[name]
    layer = _make(t, cls, (), f"{name}()")
    Z1, Z2, G = randn(3, 4, seed=80), randn(3, 4, seed=81), randn(3, 4, seed=82)
    what = f"{name}(): forward(Z1), forward(Z2), then backward(dLdA)"
    forward, backward = _method(layer, "forward", what), _method(layer, "backward", what)
    t.call(forward, Z1, what=what, forbidden=NO_AUTOGRAD)
    t.call(forward, Z2, what=what, forbidden=NO_AUTOGRAD)
    got = t.call(backward, G, what=what, forbidden=NO_AUTOGRAD)
    _, (g2,) = _autograd(fn, (Z2,), G)
    _, (g1,) = _autograd(fn, (Z1,), G)
    expect_tensor(got, g2, what=what, likely={"the state of the first forward is used, not "
                                              "that of the last": lambda: g1},
                  **tol(torch.float64, 10))


def _act_gradcheck(t, name, cls):
    layer = _make(t, cls, (), f"{name}()")
    Z, G = randn(3, 5, seed=90) * 2, randn(3, 5, seed=91)
    Z = torch.where(Z.abs() < 1e-3, Z + 0.01, Z)  # away from relu's kink
    what = f"gradient check of {name}() with L = sum(forward(Z) * dLdA)"
    forward, backward = _method(layer, "forward", what), _method(layer, "backward", what)
    num = t.call(lambda: _central(lambda z: float((forward(z) * G).sum()), Z),
                 what=f"{what}: forward", forbidden=NO_AUTOGRAD)
    t.call(forward, Z, what=what, forbidden=NO_AUTOGRAD)
    got = t.call(backward, G, what=what, forbidden=NO_AUTOGRAD)
    expect_tensor(got, num, what=f"{what}: backward against central differences of your forward",
                  atol=1e-6, rtol=1e-6)


def _act_check(t, name, cls):
    Z = torch.tensor([[-2.0, -0.5, 0.5, 3.0], [1.0, -1.0, 2.0, -3.0], [0.25, 4.0, -0.1, 0.7]],
                     dtype=torch.float64)
    G = torch.tensor([[1.0, 2.0, -1.0, 0.5], [0.3, -0.7, 1.5, 2.0], [-1.0, 1.0, 0.2, -2.5]],
                     dtype=torch.float64)
    with t.case("worked example: Z and dLdA of shape (3, 4), float64", weight=2):
        _act_case(t, name, cls, Z, G, "worked example")
    if not t.hidden:
        return
    for k, (shape, dtype) in enumerate(itertools.product(((5, 3), (4, 4), (1, 7), (64, 10)),
                                                         (torch.float64, torch.float32))):
        with t.case(f"Z {shape} {_dt(dtype)}"):
            _act_case(t, name, cls, randn(*shape, seed=k, dtype=dtype) * 2,
                      randn(*shape, seed=100 + k, dtype=dtype), "random")
    with t.case("large |Z| (up to 800): no overflow to NaN"):
        Z = torch.tensor([[-800.0, -50.0, 0.5, 50.0, 800.0]], dtype=torch.float64)
        _act_case(t, name, cls, Z, torch.ones_like(Z), "large inputs")
    if name == "ReLU":
        with t.case("Z = 0 exactly: relu'(0) = 0, as in PyTorch"):
            Z = torch.tensor([[0.0, 1.0, -1.0], [0.0, 0.0, 2.0]], dtype=torch.float64)
            _act_case(t, name, cls, Z, torch.full_like(Z, 2.0), "zeros")
    with t.case("backward uses the last forward"):
        _act_last_forward(t, name, cls)
    with t.case("gradient check by central differences", weight=2):
        _act_gradcheck(t, name, cls)


@CHAPTER.exercise("ReLU", points=1)
def check_ReLU(t, cls):
    _act_check(t, "ReLU", cls)


@CHAPTER.exercise("Sigmoid", points=1)
def check_Sigmoid(t, cls):
    _act_check(t, "Sigmoid", cls)


@CHAPTER.exercise("Tanh", points=1)
def check_Tanh(t, cls):
    _act_check(t, "Tanh", cls)


# --- SoftmaxCrossEntropy -------------------------------------------------------------------


def _sce_case(t, cls, logits, y, label):
    n = len(y)
    what = f"SoftmaxCrossEntropy() on logits {tuple(logits.shape)} {_dt(logits.dtype)} ({label})"
    layer = _make(t, cls, (), "SoftmaxCrossEntropy()")
    L_ref, (g,) = _autograd(lambda x: F.cross_entropy(x, y), (logits,),
                            torch.tensor(1.0, dtype=logits.dtype))
    k = tol(logits.dtype, 10 * float(logits.abs().max()))
    L = t.call(_method(layer, "forward", what), logits, y, what=f"{what}: forward(logits, y)",
               forbidden=NO_AUTOGRAD)
    if isinstance(L, float | int) and not isinstance(L, bool):  # a Python number is fine
        L = torch.tensor(float(L), dtype=logits.dtype)
    P = torch.softmax(logits, 1)
    onehot = F.one_hot(y, logits.shape[1]).to(logits.dtype)
    expect_tensor(L, L_ref, what=f"{what}: forward(logits, y)", inputs={"logits": logits, "y": y},
                  likely={"a sum over the batch instead of the mean":
                          lambda: F.cross_entropy(logits, y, reduction="sum"),
                          "the log is missing (mean of the probability of the true class)":
                          lambda: -(P * onehot).sum(1).mean()}, **k)
    dL = t.call(_method(layer, "backward", what), what=f"{what}: backward()",
                forbidden=NO_AUTOGRAD)
    expect_tensor(dL, g, what=f"{what}: backward()", inputs={"logits": logits, "y": y},
                  likely={"gradient not divided by the batch size: the loss is the mean over "
                          "examples, so dL/dlogits = (softmax - one_hot) / n": lambda: P - onehot,
                          "the one-hot labels are not subtracted: (softmax - one_hot) / n":
                          lambda: P / n,
                          "the sign is flipped: (softmax - one_hot) / n, not (one_hot - softmax)":
                          lambda: (onehot - P) / n}, **k)


@CHAPTER.exercise("SoftmaxCrossEntropy", points=2)
def check_SoftmaxCrossEntropy(t, cls):
    logits = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, -1.0], [0.0, 0.0, 3.0], [1.0, -1.0, 0.0]],
                          dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    with t.case("worked example: 4 examples, 3 classes, float64", weight=2):
        _sce_case(t, cls, logits, y, "worked example")
    if not t.hidden:
        return
    for k, ((n, q), dtype) in enumerate(itertools.product(((5, 3), (4, 4), (1, 10), (64, 10)),
                                                          (torch.float64, torch.float32))):
        with t.case(f"logits ({n}, {q}) {_dt(dtype)}"):
            _sce_case(t, cls, randn(n, q, seed=k, dtype=dtype) * 3,
                      torch.randint(0, q, (n,), generator=gen(k)), "random")
    with t.case("large logits (up to 1000): stable, no NaN or inf", weight=2):
        big = randn(6, 4, seed=40) * 1000
        _sce_case(t, cls, big, torch.tensor([0, 1, 2, 3, 0, 1]),
                  "large: subtract each row's max before exp")
    with t.case("gradient check by central differences"):
        layer = _make(t, cls, (), "SoftmaxCrossEntropy()")
        logits, y = randn(3, 4, seed=41), torch.tensor([3, 0, 1])
        what = "gradient check of SoftmaxCrossEntropy()"
        forward, backward = _method(layer, "forward", what), _method(layer, "backward", what)
        num = t.call(lambda: _central(lambda z: float(forward(z, y)), logits),
                     what=f"{what}: forward", forbidden=NO_AUTOGRAD)
        t.call(forward, logits, y, what=f"{what}: forward", forbidden=NO_AUTOGRAD)
        got = t.call(backward, what=f"{what}: backward()", forbidden=NO_AUTOGRAD)
        expect_tensor(got, num, what="backward() against central differences of your forward",
                      atol=1e-6, rtol=1e-6)


# --- mlp_l2_backward -----------------------------------------------------------------------


def _mlp_objective(X, y, W1, W2, lambd):
    return F.cross_entropy(torch.relu(X @ W1) @ W2, y) + lambd / 2 * (
        (W1 ** 2).sum() + (W2 ** 2).sum())


def _mlp_case(t, fn, n, d, h, q, lambd, dtype, seed):
    X = randn(n, d, seed=seed, dtype=dtype)
    W1, W2 = randn(d, h, seed=seed + 1, dtype=dtype), randn(h, q, seed=seed + 2, dtype=dtype)
    y = torch.randint(0, q, (n,), generator=gen(seed + 3))
    g1, g2 = _mlp_autograd(X, y, W1, W2, lambd)
    what = f"mlp_l2_backward(X ({n}, {d}), y, W1 ({d}, {h}), W2 ({h}, {q}), lambd={lambd})"
    out = t.call(fn, X, y, W1, W2, lambd, what=what, forbidden=NO_AUTOGRAD)
    expect_pair(out, what, "dJ/dW1", "dJ/dW2")
    d1, d2 = _mlp_autograd(X, y, W1, W2, 0.0)
    b1, b2 = mlp_l2_backward(X, y, W1, W2, 0.0)  # data terms, for the batch-size variant
    variants = {
        "the regulariser is missing: d/dW of lambd/2 * sum(W**2) is lambd * W":
            (d1, d2),
        "the regulariser is doubled: d/dW of lambd/2 * sum(W**2) is lambd * W, not 2 lambd W":
            (d1 + 2 * lambd * W1, d2 + 2 * lambd * W2),
        "the regulariser is halved: d/dW of lambd/2 * sum(W**2) is lambd * W":
            (d1 + lambd / 2 * W1, d2 + lambd / 2 * W2),
        "the gradient is not divided by the batch size n (J uses the mean cross-entropy)":
            (b1 * n + lambd * W1, b2 * n + lambd * W2),
        "relu'(H) applied to the wrong tensor: the mask is H = X @ W1 > 0":
            _mlp_wrong_mask(X, y, W1, W2, lambd),
    }
    k = tol(dtype, 10 * n)
    for idx, (name, got, ref) in enumerate((("dJ/dW1", out[0], g1), ("dJ/dW2", out[1], g2))):
        _shape_hint(got, ref, f"{what}: {name}", "transposed: in the denominator layout "
                    f"{name} has the shape of {'W1' if idx == 0 else 'W2'}")
        expect_tensor(got, ref, what=f"{name} of {what}", inputs={"X": X, "y": y},
                      likely={c: (lambda v=v, i=idx: v[i]) for c, v in variants.items()} | {
                          f"transposed {name}": lambda ref=ref: ref.T}, **k)


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


@CHAPTER.exercise("mlp_l2_backward", points=2)
def check_mlp_l2_backward(t, fn):
    with t.case("worked example: X (4, 3), W1 (3, 5), W2 (5, 2), lambd = 0.1, float64",
                weight=2):
        _mlp_case(t, fn, 4, 3, 5, 2, 0.1, torch.float64, 0)
    if not t.hidden:
        return
    for k, ((n, d, h, q), lambd, dtype) in enumerate((
            ((8, 4, 6, 3), 0.01, torch.float64), ((5, 5, 5, 5), 0.5, torch.float64),
            ((1, 3, 4, 2), 1.0, torch.float64), ((32, 10, 16, 10), 0.05, torch.float32),
            ((6, 4, 4, 4), 0.2, torch.float32), ((10, 3, 7, 4), 0.0, torch.float64))):
        with t.case(f"X ({n}, {d}), W1 ({d}, {h}), W2 ({h}, {q}), lambd {lambd}, {_dt(dtype)}"):
            _mlp_case(t, fn, n, d, h, q, lambd, dtype, 10 * (k + 1))


# --- numerical_gradient --------------------------------------------------------------------


def _ng_case(t, fn, x, h, label, returns_float=False, pass_h=True):
    c = randn(*x.shape, seed=7, dtype=x.dtype) if x.dim() else torch.tensor(1.3,
                                                                           dtype=x.dtype)

    def f(z):
        if not isinstance(z, torch.Tensor) or z.shape != x.shape:
            raise Mismatch(f"f was called with {fmt_value(z)}; it should get a tensor of x's "
                           f"shape {tuple(x.shape)}")
        v = (c * torch.sin(2 * z)).sum() + 0.1 * ((z ** 2).sum()) ** 2
        return float(v) if returns_float else v

    x0 = x.clone()
    hh = h if pass_h else 1e-5
    what = f"numerical_gradient(f, x {tuple(x.shape)}{f', h={h:g}' if pass_h else ''}) ({label})"
    args = (f, x, h) if pass_h else (f, x)
    got = t.call(fn, *args, what=what, forbidden=NO_AUTOGRAD, may_modify=True)
    if not torch.allclose(x, x0, atol=1e-12, rtol=1e-12):
        raise Mismatch(f"{what}: x was changed by the call: {fmt_value(x)} instead of "
                       f"{fmt_value(x0)}\n  likely cause: x left perturbed: restore x[i] to its "
                       "original value after evaluating f (or perturb a clone of x)")
    x.copy_(x0)
    ref = numerical_gradient(f, x0, hh)

    def forward(step):
        g = torch.zeros_like(x0)
        f0 = float(f(x0))
        for i in range(x0.numel()):
            e = torch.zeros_like(x0).reshape(-1)
            e[i] = step
            g.reshape(-1)[i] = (float(f(x0 + e.reshape(x0.shape))) - f0) / step
        return g

    likely = {"forward differences (f(x + h) - f(x)) / h: their error is O(h); central "
              "differences (f(x + h) - f(x - h)) / (2 h) have an error of O(h**2)":
              lambda: forward(hh),
              "not divided by 2 h: central differences are (f(x + h) - f(x - h)) / (2 h)":
              lambda: ref * 2,
              "h is ignored (a fixed step is used)": lambda: numerical_gradient(f, x0, 1e-5)
              if pass_h and h != 1e-5 else None}
    expect_tensor(got, ref, what=what, inputs={"x": x0}, likely=likely, atol=1e-7, rtol=1e-6)


@CHAPTER.exercise("numerical_gradient", points=2)
def check_numerical_gradient(t, fn):
    x = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -0.3]], dtype=torch.float64)
    with t.case("worked example: f(x) = sum(c * sin(2 x)) + 0.1 * sum(x**2)**2, x (2, 3)",
                weight=2):
        _ng_case(t, fn, x.clone(), 1e-3, "worked example")
    if not t.hidden:
        return
    for k, shape in enumerate(((5,), (3, 3), (2, 3, 2), (1, 7))):
        with t.case(f"x of shape {shape}, h = 1e-3"):
            _ng_case(t, fn, randn(*shape, seed=k), 1e-3, "random")
    with t.case("the default h = 1e-5"):
        _ng_case(t, fn, randn(4, 2, seed=20), 1e-5, "default h", pass_h=False)
    with t.case("f returns a Python float"):
        _ng_case(t, fn, randn(3, 2, seed=21), 1e-4, "float f", returns_float=True)
    with t.case("a gradient check: matches the analytic gradient of a quadratic form"):
        M = randn(4, 4, seed=22)
        x = randn(4, seed=23)
        got = t.call(fn, lambda z: z @ M @ z, x.clone(), 1e-4, what="numerical_gradient(z @ M @ z)",
                     forbidden=NO_AUTOGRAD, may_modify=True)
        expect_tensor(got, (M + M.T) @ x, what="numerical_gradient(f, x) for f(x) = x^T M x "
                      "(gradient (M + M^T) x)", atol=1e-6, rtol=1e-6)
