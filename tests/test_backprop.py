"""Chapter 07: references agree with autograd; the hidden checks accept correct answers written
differently and reject realistic buggy ones with specific feedback."""

import itertools
import math

import torch
import torch.nn.functional as F

from grader.chapters import backprop as ref
from grader.testing import hidden_verdict

CH = "07_backprop"


# --- references against autograd -----------------------------------------------------------

def test_layers_match_autograd():
    torch.manual_seed(0)
    A, W, b = (torch.randn(5, 3, dtype=torch.float64, requires_grad=True),
               torch.randn(3, 4, dtype=torch.float64, requires_grad=True),
               torch.randn(4, dtype=torch.float64, requires_grad=True))
    y = torch.tensor([0, 3, 1, 2, 3])
    lin, act, sce = ref.Linear(3, 4), ref.Tanh(), ref.SoftmaxCrossEntropy()
    lin.W, lin.b = W.detach(), b.detach()
    L = sce.forward(act.forward(lin.forward(A.detach())), y)
    dA = lin.backward(act.backward(sce.backward()))
    L_ref = F.cross_entropy(torch.tanh(A @ W + b), y)
    L_ref.backward()
    torch.testing.assert_close(L, L_ref.detach())
    torch.testing.assert_close(dA, A.grad)
    torch.testing.assert_close(lin.dLdW, W.grad)
    torch.testing.assert_close(lin.dLdb, b.grad)


def test_mlp_l2_backward_matches_autograd():
    X, y = torch.randn(6, 3, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1, 0])
    W1 = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    W2 = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    ref._mlp_objective(X, y, W1, W2, 0.3).backward()
    g1, g2 = ref.mlp_l2_backward(X, y, W1.detach(), W2.detach(), 0.3)
    torch.testing.assert_close(g1, W1.grad)
    torch.testing.assert_close(g2, W2.grad)


def test_numerical_gradient_reference():
    x = torch.randn(3, 2, dtype=torch.float64)
    x0 = x.clone()
    g = ref.numerical_gradient(lambda z: (z ** 3).sum(), x)
    torch.testing.assert_close(g, 3 * x ** 2, atol=1e-8, rtol=1e-8)
    assert torch.equal(x, x0)


# --- correct variants ----------------------------------------------------------------------

class LinearEinsum:
    def __init__(self, in_features, out_features, generator=None):
        bound = 1 / math.sqrt(in_features)
        self.W = torch.empty(in_features, out_features).uniform_(-bound, bound,
                                                                 generator=generator)
        self.b = torch.zeros(out_features)

    def forward(self, A):
        self.A = A.clone()
        return torch.einsum("ni,io->no", A, self.W) + self.b

    def backward(self, dLdZ):
        self.dLdW = torch.einsum("ni,no->io", self.A, dLdZ)
        self.dLdb = torch.einsum("no->o", dLdZ)
        return torch.einsum("no,io->ni", dLdZ, self.W)


class LinearLoop:
    def __init__(self, in_features, out_features, generator=None):
        self.W = torch.randn(in_features, out_features, generator=generator) * 0.1
        self.b = torch.zeros(out_features)

    def forward(self, A):
        self.A = A
        return torch.matmul(A, self.W) + self.b.reshape(1, -1)

    def backward(self, dLdZ):
        self.dLdW = sum(torch.outer(a, g) for a, g in zip(self.A, dLdZ))
        self.dLdb = dLdZ.T @ torch.ones(len(dLdZ), dtype=dLdZ.dtype)
        return (self.W @ dLdZ.T).T


class ReLUWhere:
    def forward(self, Z):
        self.A = torch.where(Z > 0, Z, torch.zeros_like(Z))
        return self.A

    def backward(self, dLdA):
        return torch.where(self.A > 0, dLdA, torch.zeros_like(dLdA))


class ReLUMul:
    def forward(self, Z):
        self.mask = (Z > 0).to(Z.dtype)
        return Z * self.mask

    def backward(self, dLdA):
        return dLdA * self.mask


class SigmoidExp:
    def forward(self, Z):
        self.Z = Z
        return 1 / (1 + torch.exp(-Z))

    def backward(self, dLdA):
        s = 1 / (1 + torch.exp(-self.Z))
        return dLdA * s * (1 - s)


class TanhViaSigmoid:
    def forward(self, Z):
        self.A = 2 * torch.sigmoid(2 * Z) - 1
        return self.A

    def backward(self, dLdA):
        return dLdA - dLdA * self.A * self.A


class TanhRecompute:
    def forward(self, Z):
        self.Z = Z.clone()
        return torch.tanh(Z)

    def backward(self, dLdA):
        return dLdA * (1 - torch.tanh(self.Z).pow(2))


class SCELogsumexp:
    def forward(self, logits, y):
        self.n, self.y = len(y), y
        log_p = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        self.P = log_p.exp()
        return -(log_p * F.one_hot(y, logits.shape[1]).to(logits.dtype)).sum() / self.n

    def backward(self):
        return (self.P - F.one_hot(self.y, self.P.shape[1]).to(self.P.dtype)) / self.n


class SCELoop:
    def forward(self, logits, y):
        self.logits, self.y = logits, y
        total = 0.0
        for row, label in zip(logits, y):
            m = row.max()
            total = total + (m + torch.log(torch.exp(row - m).sum()) - row[label])
        return total / len(y)

    def backward(self):
        grads = []
        for row, label in zip(self.logits, self.y):
            p = torch.exp(row - row.max())
            p = p / p.sum()
            p[label] -= 1
            grads.append(p)
        return torch.stack(grads) / len(self.y)


def mlp_einsum(X, y, W1, W2, lambd):
    n = len(X)
    H = torch.einsum("nd,dh->nh", X, W1)
    A = H.clamp(min=0)
    O = torch.einsum("nh,hq->nq", A, W2)
    G = (torch.softmax(O, 1) - F.one_hot(y, O.shape[1]).to(X.dtype)) / n
    dW2 = torch.einsum("nh,nq->hq", A, G) + lambd * W2
    dH = torch.einsum("nq,hq->nh", G, W2) * (H > 0)
    return torch.einsum("nd,nh->dh", X, dH) + lambd * W1, dW2


def mlp_loop(X, y, W1, W2, lambd):
    dW1, dW2 = lambd * W1.clone(), lambd * W2.clone()
    for x, label in zip(X, y):
        h = x @ W1
        a = torch.relu(h)
        p = torch.softmax(a @ W2, 0)
        p[label] -= 1
        dW2 += torch.outer(a, p) / len(X)
        dW1 += torch.outer(x, (W2 @ p) * (h > 0)) / len(X)
    return dW1, dW2


def ng_inplace(f, x, h=1e-5):
    grad = torch.zeros_like(x)
    for idx in itertools.product(*[range(s) for s in x.shape]):
        old = x[idx].item()
        x[idx] = old + h
        fp = f(x)
        x[idx] = old - h
        fm = f(x)
        x[idx] = old
        grad[idx] = (fp - fm) / (2 * h)
    return grad


def ng_shift(f, x, h=1e-5):
    grad = torch.empty_like(x).reshape(-1)
    flat = x.reshape(-1)
    for i in range(flat.numel()):
        flat[i] += h
        fp = float(f(x))
        flat[i] -= 2 * h
        fm = float(f(x))
        flat[i] += h
        grad[i] = (fp - fm) / (2 * h)
    return grad.reshape(x.shape)


class SigmoidViaTanh:
    def forward(self, Z):
        self.A = 0.5 * (1 + torch.tanh(Z / 2))
        return self.A

    def backward(self, dLdA):
        return dLdA * (self.A - self.A ** 2)


def ng_clones(f, x, h=1e-5):
    grad = torch.zeros_like(x)
    for idx in itertools.product(*[range(s) for s in x.shape]):
        x_plus, x_minus = x.clone(), x.clone()
        x_plus[idx] += h
        x_minus[idx] -= h
        grad[idx] = (f(x_plus) - f(x_minus)) / (2 * h)
    return grad


CORRECT = [
    ("Linear", ref.Linear), ("Linear", LinearEinsum), ("Linear", LinearLoop),
    ("ReLU", ref.ReLU), ("ReLU", ReLUWhere), ("ReLU", ReLUMul),
    ("Sigmoid", ref.Sigmoid), ("Sigmoid", SigmoidExp), ("Sigmoid", SigmoidViaTanh),
    ("Tanh", ref.Tanh), ("Tanh", TanhViaSigmoid), ("Tanh", TanhRecompute),
    ("SoftmaxCrossEntropy", ref.SoftmaxCrossEntropy), ("SoftmaxCrossEntropy", SCELogsumexp),
    ("SoftmaxCrossEntropy", SCELoop),
    ("mlp_l2_backward", ref.mlp_l2_backward), ("mlp_l2_backward", mlp_einsum),
    ("mlp_l2_backward", mlp_loop),
    ("numerical_gradient", ref.numerical_gradient), ("numerical_gradient", ng_inplace),
    ("numerical_gradient", ng_shift), ("numerical_gradient", ng_clones),
]


# --- buggy variants --------------------------------------------------------------------------

def _linear(backward=None, forward=None, init=None):
    class L(ref.Linear):
        pass
    if backward:
        L.backward = backward
    if forward:
        L.forward = forward
    if init:
        L.__init__ = init
    return L


def _set(self, dLdW, dLdb, dLdA):
    self.dLdW, self.dLdb = dLdW, dLdb
    return dLdA


LinearBiasMean = _linear(lambda s, g: _set(s, s.A.T @ g, g.mean(0), g @ s.W.T))
LinearWT = _linear(lambda s, g: _set(s, g.T @ s.A, g.sum(0), g @ s.W.T))
LinearNoTransposeA = _linear(lambda s, g: _set(s, s.A.T @ g, g.sum(0), g @ s.W))
LinearBiasNotSummed = _linear(lambda s, g: _set(s, s.A.T @ g, g, g @ s.W.T))
LinearDivided = _linear(lambda s, g: _set(s, s.A.T @ g / len(g), g.sum(0) / len(g),
                                          g @ s.W.T))
LinearNoBias = _linear(forward=lambda s, A: (setattr(s, "A", A), A @ s.W)[1])


def _first_forward(s, A):
    if not hasattr(s, "A"):
        s.A = A
    return A @ s.W + s.b


LinearFirstForward = _linear(forward=_first_forward)


def _update(s, g):
    dA = ref.Linear.backward(s, g)
    s.W = s.W - 0.1 * s.dLdW
    return dA


LinearUpdates = _linear(backward=_update)


def _torch_layout(s, i, o, generator=None):
    s.W = torch.randn(o, i, generator=generator)
    s.b = torch.zeros(o)


LinearTorchLayout = _linear(init=_torch_layout)


class LinearAutograd(ref.Linear):
    def forward(self, A):
        self.A = A.detach().clone().requires_grad_()
        self.Wg = self.W.detach().clone().requires_grad_()
        self.bg = self.b.detach().clone().requires_grad_()
        self.Z = self.A @ self.Wg + self.bg
        return self.Z.detach()

    def backward(self, dLdZ):
        self.Z.backward(dLdZ)
        self.dLdW, self.dLdb = self.Wg.grad, self.bg.grad
        return self.A.grad


class ReLUNoChain(ref.ReLU):
    def backward(self, dLdA):
        return (self.Z > 0).to(dLdA.dtype)


class ReLUGe(ref.ReLU):
    def backward(self, dLdA):
        return dLdA * (self.Z >= 0).to(dLdA.dtype)


class ReLUInPlace:
    def forward(self, Z):
        self.Z = Z
        Z[Z < 0] = 0
        return Z

    def backward(self, dLdA):
        return dLdA * (self.Z > 0)


class ReLUMaskFromGrad(ref.ReLU):
    def backward(self, dLdA):
        return torch.relu(dLdA)


class ReLUFirstForward(ref.ReLU):
    def forward(self, Z):
        if not hasattr(self, "Z"):
            self.Z = Z
        return torch.relu(Z)


class _AutogradAct:
    fn = staticmethod(torch.sigmoid)

    def forward(self, Z):
        self.Z = Z.detach().clone().requires_grad_()
        self.A = self.fn(self.Z)
        return self.A.detach()

    def backward(self, dLdA):
        return torch.autograd.grad(self.A, self.Z, dLdA)[0]


class ReLUAutograd(_AutogradAct):
    fn = staticmethod(torch.relu)


class SigmoidAutograd(_AutogradAct):
    fn = staticmethod(torch.sigmoid)


class TanhAutograd(_AutogradAct):
    fn = staticmethod(torch.tanh)


class SigmoidNoChain(ref.Sigmoid):
    def backward(self, dLdA):
        return self.A * (1 - self.A)


class TanhUsesZ:
    def forward(self, Z):
        self.Z = Z
        return torch.tanh(Z)

    def backward(self, dLdA):
        return dLdA * (1 - self.Z ** 2)


class SigmoidNoOneMinus(ref.Sigmoid):
    def backward(self, dLdA):
        return dLdA * self.A


class SigmoidUnstable(ref.Sigmoid):
    def forward(self, Z):
        self.A = torch.exp(Z) / (1 + torch.exp(Z))
        return self.A


class SigmoidUsesZ:
    def forward(self, Z):
        self.Z = Z
        return torch.sigmoid(Z)

    def backward(self, dLdA):
        return dLdA * self.Z * (1 - self.Z)


class TanhOneMinusA(ref.Tanh):
    def backward(self, dLdA):
        return dLdA * (1 - self.A)


class TanhNoChain(ref.Tanh):
    def backward(self, dLdA):
        return 1 - self.A ** 2


class TanhUnstable(ref.Tanh):
    def forward(self, Z):
        self.A = (torch.exp(Z) - torch.exp(-Z)) / (torch.exp(Z) + torch.exp(-Z))
        return self.A


class SCENotDivided(ref.SoftmaxCrossEntropy):
    def backward(self):
        return ref.SoftmaxCrossEntropy.backward(self) * len(self.y)


class SCESum(ref.SoftmaxCrossEntropy):
    def forward(self, logits, y):
        return ref.SoftmaxCrossEntropy.forward(self, logits, y) * len(y)


class SCEUnstable(ref.SoftmaxCrossEntropy):
    def forward(self, logits, y):
        e = torch.exp(logits)
        self.probs, self.y = e / e.sum(1, keepdim=True), y
        return -torch.log(self.probs[torch.arange(len(y)), y]).mean()


class SCESign(ref.SoftmaxCrossEntropy):
    def backward(self):
        return -ref.SoftmaxCrossEntropy.backward(self)


class SCEAutograd:
    def forward(self, logits, y):
        self.logits = logits.detach().clone().requires_grad_()
        self.L = F.cross_entropy(self.logits, y)
        return self.L.detach()

    def backward(self):
        self.L.backward()
        return self.logits.grad


def mlp_no_reg(X, y, W1, W2, lambd):
    return ref.mlp_l2_backward(X, y, W1, W2, 0.0)


def mlp_double_reg(X, y, W1, W2, lambd):
    return ref.mlp_l2_backward(X, y, W1, W2, 2 * lambd)


def mlp_not_divided(X, y, W1, W2, lambd):
    d1, d2 = ref.mlp_l2_backward(X, y, W1, W2, 0.0)
    return d1 * len(X) + lambd * W1, d2 * len(X) + lambd * W2


def mlp_autograd(X, y, W1, W2, lambd):
    A, B = W1.clone().requires_grad_(), W2.clone().requires_grad_()
    ref._mlp_objective(X, y, A, B, lambd).backward()
    return A.grad, B.grad


def mlp_wrong_mask(X, y, W1, W2, lambd):
    return ref._mlp_wrong_mask(X, y, W1, W2, lambd)


def mlp_transposed(X, y, W1, W2, lambd):
    d1, d2 = ref.mlp_l2_backward(X, y, W1, W2, lambd)
    return d1.T, d2.T


def ng_forward(f, x, h=1e-5):
    grad = torch.zeros_like(x)
    f0 = float(f(x))
    for i in range(x.numel()):
        z = x.clone()
        z.view(-1)[i] += h
        grad.view(-1)[i] = (float(f(z)) - f0) / h
    return grad


def ng_perturbed(f, x, h=1e-5):
    grad = torch.zeros_like(x)
    flat = x.view(-1)
    for i in range(flat.numel()):
        flat[i] += h
        fp = float(f(x))
        flat[i] -= 2 * h
        fm = float(f(x))
        grad.view(-1)[i] = (fp - fm) / (2 * h)
    return grad


def ng_no_two(f, x, h=1e-5):
    return ref.numerical_gradient(f, x, h) * 2


def ng_fixed_h(f, x, h=1e-5):
    return ref.numerical_gradient(f, x, 1e-5)


def ng_autograd(f, x, h=1e-5):
    z = x.clone().requires_grad_()
    return torch.autograd.grad(f(z), z)[0]


BUGGY = [
    ("Linear", LinearBiasMean, "dLdb as a mean"),
    ("Linear", LinearWT, "transposed dLdW"),
    ("Linear", LinearNoTransposeA, "missing transpose"),
    ("Linear", LinearBiasNotSummed, "not summed over the batch"),
    ("Linear", LinearDivided, "divided by the batch size"),
    ("Linear", LinearNoBias, "bias is not added"),
    ("Linear", LinearFirstForward, "first forward"),
    ("Linear", LinearUpdates, "changed W or b"),
    ("Linear", LinearTorchLayout, "(out, in) layout"),
    ("Linear", LinearAutograd, "from scratch"),
    ("ReLU", ReLUNoChain, "chain rule"),
    ("ReLU", ReLUGe, "relu'(0)"),
    ("ReLU", ReLUInPlace, "in place"),
    ("ReLU", ReLUMaskFromGrad, "mask comes from dLdA"),
    ("ReLU", ReLUFirstForward, "first forward"),
    ("ReLU", ReLUAutograd, "from scratch"),
    ("Sigmoid", SigmoidNoChain, "chain rule"),
    ("Sigmoid", SigmoidAutograd, "from scratch"),
    ("Tanh", TanhUsesZ, "uses Z instead of A"),
    ("Tanh", TanhAutograd, "from scratch"),
    ("Sigmoid", SigmoidNoOneMinus, "without (1 - A)"),
    ("Sigmoid", SigmoidUnstable, "NaN"),
    ("Sigmoid", SigmoidUsesZ, "uses Z instead of A"),
    ("Tanh", TanhOneMinusA, "1 - A instead of 1 - A**2"),
    ("Tanh", TanhNoChain, "chain rule"),
    ("Tanh", TanhUnstable, "NaN"),
    ("SoftmaxCrossEntropy", SCENotDivided, "not divided by the batch size"),
    ("SoftmaxCrossEntropy", SCESum, "sum over the batch"),
    ("SoftmaxCrossEntropy", SCEUnstable, "NaN"),
    ("SoftmaxCrossEntropy", SCESign, "sign is flipped"),
    ("SoftmaxCrossEntropy", SCEAutograd, "from scratch"),
    ("mlp_l2_backward", mlp_no_reg, "regulariser is missing"),
    ("mlp_l2_backward", mlp_double_reg, "regulariser is doubled"),
    ("mlp_l2_backward", mlp_not_divided, "not divided by the batch size"),
    ("mlp_l2_backward", mlp_autograd, "from scratch"),
    ("mlp_l2_backward", mlp_wrong_mask, "wrong tensor"),
    ("mlp_l2_backward", mlp_transposed, "transposed"),
    ("numerical_gradient", ng_forward, "forward differences"),
    ("numerical_gradient", ng_perturbed, "x left perturbed"),
    ("numerical_gradient", ng_no_two, "not divided by 2 h"),
    ("numerical_gradient", ng_fixed_h, "h is ignored"),
    ("numerical_gradient", ng_autograd, "from scratch"),
]


class _Empty:
    pass


class _ReturnsNone:
    def __init__(self, *args, **kwargs):
        pass

    def forward(self, *args):
        return None

    def backward(self, *args):
        return None


def test_weird_answers_never_crash_the_grader():
    from grader.registry import get_chapter

    weird = [_Empty, _ReturnsNone, lambda *a, **k: None, lambda *a, **k: (1, 2), 42]
    for name in get_chapter(CH).exercises:
        for answer in weird:
            v = hidden_verdict(CH, name, answer)
            assert v.score < v.max_score and "grader failed" not in v.feedback, (name, v.feedback)
