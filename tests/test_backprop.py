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


# ============================================================================================
# Part 2: the library (Identity, MSELoss, CrossEntropyLoss, BatchNorm1d, MLP, SGD)
# ============================================================================================

def test_library_references_match_autograd():
    torch.manual_seed(1)
    Z = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    BW = torch.rand(4, dtype=torch.float64, requires_grad=True)
    Bb = torch.randn(4, dtype=torch.float64, requires_grad=True)
    Y = F.one_hot(torch.tensor([0, 3, 1, 2, 3, 0]), 4).to(torch.float64)
    bn, ce = ref.BatchNorm1d(4, eps=1e-5), ref.CrossEntropyLoss()
    bn.BW, bn.Bb = BW.detach(), Bb.detach()
    L = ce.forward(bn.forward(Z.detach()), Y)
    dZ = bn.backward(ce.backward())
    mean, var = Z.mean(0), Z.var(0, unbiased=False)
    L_ref = F.cross_entropy(BW * (Z - mean) / torch.sqrt(var + 1e-5) + Bb, Y.argmax(1))
    L_ref.backward()
    torch.testing.assert_close(L, L_ref.detach())
    torch.testing.assert_close(dZ, Z.grad)
    torch.testing.assert_close(bn.dLdBW, BW.grad)
    torch.testing.assert_close(bn.dLdBb, Bb.grad)
    A = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    T = torch.randn(3, 5, dtype=torch.float64)
    mse = ref.MSELoss()
    torch.testing.assert_close(mse.forward(A.detach(), T), F.mse_loss(A, T).detach())
    F.mse_loss(A, T).backward()
    torch.testing.assert_close(mse.backward(), A.grad)


def test_sgd_reference_matches_torch_optim():
    W = torch.randn(3, 2, dtype=torch.float64)
    layer = ref.Linear(3, 2)
    layer.W, layer.b = W.clone(), torch.zeros(2, dtype=torch.float64)
    model = type("M", (), {"layers": [layer]})()
    p = [W.clone().requires_grad_(), torch.zeros(2, dtype=torch.float64, requires_grad=True)]
    ours, theirs = ref.SGD(model, 0.1, momentum=0.9), torch.optim.SGD(p, lr=0.1, momentum=0.9)
    W_obj = layer.W
    for _ in range(3):
        g = torch.randn(3, 2, dtype=torch.float64)
        layer.dLdW, layer.dLdb = g, g.sum(0)
        p[0].grad, p[1].grad = g.clone(), g.sum(0).clone()
        ours.step()
        theirs.step()
    assert layer.W is W_obj
    torch.testing.assert_close(layer.W, p[0].detach())
    torch.testing.assert_close(layer.b, p[1].detach())


class IdentityClone:
    def forward(self, Z):
        return Z.clone()

    def backward(self, dLdA):
        return dLdA * 1


class IdentityStored:
    def forward(self, Z):
        self.A = Z + 0
        return self.A

    def backward(self, dLdA):
        return torch.ones_like(self.A) * dLdA


class IdentityOnes(ref.Identity):
    def backward(self, dLdA):
        return torch.ones_like(dLdA)


class IdentityFloat(ref.Identity):
    def forward(self, Z):
        return Z.float()


class IdentityReturnsZ:
    def forward(self, Z):
        self.Z = Z
        return Z

    def backward(self, dLdA):
        return self.Z


class MSEMean:
    def forward(self, A, Y):
        self.diff = A - Y
        return (self.diff ** 2).mean()

    def backward(self):
        return 2 * self.diff / self.diff.numel()


class MSELoop:
    def forward(self, A, Y):
        self.A, self.Y = A, Y
        n, C = A.shape
        total = torch.zeros((), dtype=A.dtype)
        for a, y in zip(A, Y):
            total = total + ((a - y) * (a - y)).sum()
        return total / (n * C)

    def backward(self):
        n, C = self.A.shape
        return (self.A - self.Y) * (2.0 / (n * C))


class MSEPerN(ref.MSELoss):
    def forward(self, A, Y):
        self.A, self.Y = A, Y
        return ((A - Y) ** 2).sum() / A.shape[0]

    def backward(self):
        return 2 * (self.A - self.Y) / self.A.shape[0]


class MSENoTwo(ref.MSELoss):
    def backward(self):
        return (self.A - self.Y) / self.A.numel()


class MSESign(ref.MSELoss):
    def backward(self):
        return 2 * (self.Y - self.A) / self.A.numel()


class MSEFunctional(ref.MSELoss):
    def forward(self, A, Y):
        self.A, self.Y = A, Y
        return F.mse_loss(A, Y)


class CELogsumexpByHand:
    def forward(self, A, Y):
        m = A.max(dim=1, keepdim=True).values
        lse = m + torch.log(torch.exp(A - m).sum(dim=1, keepdim=True))
        self.S, self.Y = torch.exp(A - lse), Y
        return (Y * (lse - A)).sum(dim=1).mean()

    def backward(self):
        return (self.S - self.Y) / len(self.Y)


class CELoop:
    def forward(self, A, Y):
        self.rows = []
        total = torch.zeros((), dtype=A.dtype)
        for a, y in zip(A, Y):
            e = torch.exp(a - a.max())
            log_p = (a - a.max()) - torch.log(e.sum())
            self.rows.append(e / e.sum() - y)
            total = total - (y * log_p).sum()
        return total / len(A)

    def backward(self):
        return torch.stack(self.rows) / len(self.rows)


class CELogOfSoftmax(CELoop):
    """Shifted, but the log of the probabilities: exp underflows to 0, and 0 * log(0) is NaN."""

    def forward(self, A, Y):
        self.rows = []
        total = torch.zeros((), dtype=A.dtype)
        for a, y in zip(A, Y):
            e = torch.exp(a - a.max())
            p = e / e.sum()
            self.rows.append(p - y)
            total = total - (y * torch.log(p)).sum()
        return total / len(A)


class CEUnstable(ref.CrossEntropyLoss):
    def forward(self, A, Y):
        e = torch.exp(A)
        self.P, self.Y = e / e.sum(dim=1, keepdim=True), Y
        return -(Y * torch.log(self.P)).sum() / A.shape[0]


class CENotDivided(ref.CrossEntropyLoss):
    def backward(self):
        return self.P - self.Y


class CESum(ref.CrossEntropyLoss):
    def forward(self, A, Y):
        return ref.CrossEntropyLoss.forward(self, A, Y) * A.shape[0]


class CESign(ref.CrossEntropyLoss):
    def backward(self):
        return (self.Y - self.P) / self.Y.shape[0]


class CETorchSoftmax(ref.CrossEntropyLoss):
    def forward(self, A, Y):
        log_p = torch.log_softmax(A, dim=1)
        self.P, self.Y = log_p.exp(), Y
        return -(Y * log_p).sum() / A.shape[0]


class BNExplicitGraph(ref.BatchNorm1d):
    """The backward pass node by node, as in HW1P1's write-up."""

    def backward(self, dLdBZ):
        n = self.Z.shape[0]
        self.dLdBb = dLdBZ.sum(0)
        self.dLdBW = (dLdBZ * self.NZ).sum(0)
        dLdNZ = dLdBZ * self.BW
        dLdV = (-0.5 * dLdNZ * (self.Z - self.M) * (self.V + self.eps) ** -1.5).sum(0)
        dNZdM = -(self.V + self.eps) ** -0.5 - 0.5 * (self.Z - self.M) * (
            self.V + self.eps) ** -1.5 * (-2 / n * (self.Z - self.M).sum(0))
        dLdM = (dLdNZ * dNZdM).sum(0)
        return (dLdNZ * (self.V + self.eps) ** -0.5 + dLdV * (2 / n * (self.Z - self.M))
                + dLdM / n)


class BNCompact:
    def __init__(self, num_features, alpha=0.9, eps=1e-8):
        self.alpha, self.eps = alpha, eps
        self.BW, self.Bb = torch.ones(num_features), torch.zeros(num_features)
        self.running_M, self.running_V = torch.zeros(num_features), torch.ones(num_features)

    def forward(self, Z, eval=False):
        if eval:
            return self.BW * (Z - self.running_M) * torch.rsqrt(self.running_V + self.eps) \
                + self.Bb
        M = Z.sum(0) / Z.shape[0]
        V = ((Z - M) ** 2).sum(0) / Z.shape[0]
        self.istd = torch.rsqrt(V + self.eps)
        self.NZ = (Z - M) * self.istd
        self.running_M = self.running_M * self.alpha + M * (1 - self.alpha)
        self.running_V = self.running_V * self.alpha + V * (1 - self.alpha)
        return self.NZ * self.BW + self.Bb

    def backward(self, dLdBZ):
        self.dLdBb = dLdBZ.sum(0)
        self.dLdBW = (dLdBZ * self.NZ).sum(0)
        g = dLdBZ * self.BW
        return self.istd * (g - g.mean(0) - self.NZ * (g * self.NZ).mean(0))


class BNUnbiased(ref.BatchNorm1d):
    def forward(self, Z, eval=False):
        if eval:
            return ref.BatchNorm1d.forward(self, Z, eval=True)
        self.Z, self.M, self.V = Z, Z.mean(0), Z.var(0)
        self.NZ = (Z - self.M) / torch.sqrt(self.V + self.eps)
        self.running_M = self.alpha * self.running_M + (1 - self.alpha) * self.M
        self.running_V = self.alpha * self.running_V + (1 - self.alpha) * self.V
        return self.BW * self.NZ + self.Bb


class BNEvalUpdates(ref.BatchNorm1d):
    def forward(self, Z, eval=False):
        if eval:
            M, V = Z.mean(0), Z.var(0, unbiased=False)
            self.running_M = self.alpha * self.running_M + (1 - self.alpha) * M
            self.running_V = self.alpha * self.running_V + (1 - self.alpha) * V
            return self.BW * (Z - self.running_M) / torch.sqrt(self.running_V + self.eps) \
                + self.Bb
        return ref.BatchNorm1d.forward(self, Z)


class BNEvalBatchStats(ref.BatchNorm1d):
    def forward(self, Z, eval=False):
        if eval:
            M, V = Z.mean(0), Z.var(0, unbiased=False)
            return self.BW * (Z - M) / torch.sqrt(V + self.eps) + self.Bb
        return ref.BatchNorm1d.forward(self, Z)


class BNEpsOutside(ref.BatchNorm1d):
    def forward(self, Z, eval=False):
        if eval:
            return ref.BatchNorm1d.forward(self, Z, eval=True)
        ref.BatchNorm1d.forward(self, Z)
        self.NZ = (Z - self.M) / (torch.sqrt(self.V) + self.eps)
        return self.BW * self.NZ + self.Bb


class BNSwappedAlpha(ref.BatchNorm1d):
    def forward(self, Z, eval=False):
        if eval:
            return ref.BatchNorm1d.forward(self, Z, eval=True)
        rM, rV = self.running_M, self.running_V
        out = ref.BatchNorm1d.forward(self, Z)
        self.running_M = (1 - self.alpha) * rM + self.alpha * self.M
        self.running_V = (1 - self.alpha) * rV + self.alpha * self.V
        return out


class BNDirectPath(ref.BatchNorm1d):
    def backward(self, dLdBZ):
        ref.BatchNorm1d.backward(self, dLdBZ)
        return dLdBZ * self.BW / torch.sqrt(self.V + self.eps)


class BNNoVariancePath(ref.BatchNorm1d):
    def backward(self, dLdBZ):
        ref.BatchNorm1d.backward(self, dLdBZ)
        g = dLdBZ * self.BW
        return (g - g.mean(0)) / torch.sqrt(self.V + self.eps)


class BNAutograd(ref.BatchNorm1d):
    def forward(self, Z, eval=False):
        if eval:
            return ref.BatchNorm1d.forward(self, Z, eval=True)
        self.Zg = Z.detach().clone().requires_grad_()
        self.out = ref.BatchNorm1d.forward(self, self.Zg)
        self.running_M, self.running_V = self.running_M.detach(), self.running_V.detach()
        return self.out.detach()

    def backward(self, dLdBZ):
        (g,) = torch.autograd.grad(self.out, (self.Zg,), dLdBZ)
        self.dLdBW = (dLdBZ * self.NZ.detach()).sum(0)
        self.dLdBb = dLdBZ.sum(0)
        return g


def _mlp_class(build):
    class M(ref.MLP):
        def __init__(self, layer_sizes, generator=None):
            self.layers = build(layer_sizes, generator)
    return M


def _mlp_zip(sizes, generator):
    linears = [ref.Linear(i, o, generator=generator) for i, o in zip(sizes[:-1], sizes[1:])]
    layers = []
    for k, lin in enumerate(linears):
        layers += [lin] if k == len(linears) - 1 else [lin, ref.ReLU()]
    return layers


class MLPExplicit:
    def __init__(self, layer_sizes, generator=None):
        self.layers = _mlp_zip(layer_sizes, generator)

    def forward(self, A):
        out = A
        for i in range(len(self.layers)):
            out = self.layers[i].forward(out)
        return out

    def backward(self, dLdZ):
        grad = dLdZ
        for i in range(len(self.layers) - 1, -1, -1):
            grad = self.layers[i].backward(grad)
        return grad


def _mlp_shared_relu(sizes, generator):
    relu, layers = ref.ReLU(), []
    for i in range(len(sizes) - 1):
        layers.append(ref.Linear(sizes[i], sizes[i + 1], generator=generator))
        if i < len(sizes) - 2:
            layers.append(relu)
    return layers


def _mlp_relu_after_last(sizes, generator):
    layers = []
    for i in range(len(sizes) - 1):
        layers += [ref.Linear(sizes[i], sizes[i + 1], generator=generator), ref.ReLU()]
    return layers


def _mlp_no_generator(sizes, generator):
    return _mlp_zip(sizes, None)


class MLPSkipsFirst(ref.MLP):
    def backward(self, dLdZ):
        for layer in reversed(self.layers[1:]):
            dLdZ = layer.backward(dLdZ)
        return dLdZ


class MLPNoReturn(ref.MLP):
    def backward(self, dLdZ):
        ref.MLP.backward(self, dLdZ)


class SGDVelocityList:
    def __init__(self, model, lr, momentum=0.0):
        self.l, self.lr, self.mu = model.layers, lr, momentum
        self.vel = [{} for _ in self.l]

    def step(self):
        for layer, vel in zip(self.l, self.vel):
            for p in ("W", "b", "BW", "Bb"):
                if not hasattr(layer, p):
                    continue
                g = getattr(layer, "dLd" + p)
                vel[p] = self.mu * vel.get(p, torch.zeros_like(g)) + g
                getattr(layer, p).sub_(self.lr * vel[p])


class SGDNoVelocityFirst:
    """Velocities as zeros allocated at construction, updated with in-place ops."""

    def __init__(self, model, lr, momentum=0.0):
        self.model, self.lr, self.momentum = model, lr, momentum
        self.v = {}
        for k, layer in enumerate(model.layers):
            for p in ("W", "b", "BW", "Bb"):
                if hasattr(layer, p):
                    self.v[(k, p)] = torch.zeros_like(getattr(layer, p))

    def step(self):
        for (k, p), v in self.v.items():
            layer = self.model.layers[k]
            v.mul_(self.momentum).add_(getattr(layer, "dLd" + p))
            getattr(layer, p).add_(v, alpha=-self.lr)


class SGDReset(ref.SGD):
    def step(self):
        self.v = {}
        ref.SGD.step(self)


class SGDNotInPlace(ref.SGD):
    def step(self):
        for k, layer in enumerate(self.model.layers):
            for p in ("W", "b", "BW", "Bb"):
                if hasattr(layer, p):
                    v = self.momentum * self.v.get((k, p), 0) + getattr(layer, "dLd" + p)
                    self.v[(k, p)] = v
                    setattr(layer, p, getattr(layer, p) - self.lr * v)


class SGDSkipsBN(ref.SGD):
    def step(self):
        for k, layer in enumerate(self.model.layers):
            for p in ("W", "b"):
                if hasattr(layer, p):
                    v = self.momentum * self.v.get((k, p), 0) + getattr(layer, "dLd" + p)
                    self.v[(k, p)] = v
                    getattr(layer, p).sub_(self.lr * v)


class SGDDampening(ref.SGD):
    def step(self):
        for k, layer in enumerate(self.model.layers):
            for p in ("W", "b", "BW", "Bb"):
                if hasattr(layer, p):
                    g = getattr(layer, "dLd" + p)
                    v = self.v.get((k, p))
                    v = (1 - self.momentum) * g if v is None else \
                        self.momentum * v + (1 - self.momentum) * g
                    self.v[(k, p)] = v
                    getattr(layer, p).sub_(self.lr * v)


CORRECT += [
    ("Identity", ref.Identity), ("Identity", IdentityClone), ("Identity", IdentityStored),
    ("MSELoss", ref.MSELoss), ("MSELoss", MSEMean), ("MSELoss", MSELoop),
    ("CrossEntropyLoss", ref.CrossEntropyLoss), ("CrossEntropyLoss", CELogsumexpByHand),
    ("CrossEntropyLoss", CELoop),
    ("BatchNorm1d", ref.BatchNorm1d), ("BatchNorm1d", BNExplicitGraph),
    ("BatchNorm1d", BNCompact),
    ("MLP", ref.MLP), ("MLP", MLPExplicit), ("MLP", _mlp_class(_mlp_zip)),
    ("SGD", ref.SGD), ("SGD", SGDVelocityList), ("SGD", SGDNoVelocityFirst),
]

BUGGY += [
    ("Identity", IdentityOnes, "chain rule"),
    ("Identity", IdentityFloat, "dtype"),
    ("Identity", IdentityReturnsZ, "returns Z instead of dLdA"),
    ("MSELoss", MSEPerN, "divided by n only"),
    ("MSELoss", MSENoTwo, "factor 2"),
    ("MSELoss", MSESign, "sign is flipped"),
    ("MSELoss", MSEFunctional, "torch.nn"),
    ("CrossEntropyLoss", CEUnstable, "NaN"),
    ("CrossEntropyLoss", CELogOfSoftmax, "NaN"),
    ("CrossEntropyLoss", CENotDivided, "not divided by the batch size"),
    ("CrossEntropyLoss", CESum, "sum over the batch"),
    ("CrossEntropyLoss", CESign, "sign is flipped"),
    ("CrossEntropyLoss", CETorchSoftmax, "torch.log_softmax"),
    ("BatchNorm1d", BNUnbiased, "unbiased variance"),
    ("BatchNorm1d", BNEvalUpdates, "updated in eval mode"),
    ("BatchNorm1d", BNEvalBatchStats, "batch's own statistics"),
    ("BatchNorm1d", BNEpsOutside, "eps outside the square root"),
    ("BatchNorm1d", BNSwappedAlpha, "alpha on the wrong term"),
    ("BatchNorm1d", BNDirectPath, "paths through the batch mean and variance"),
    ("BatchNorm1d", BNNoVariancePath, "path through the batch variance"),
    ("BatchNorm1d", BNAutograd, "from scratch"),
    ("MLP", _mlp_class(_mlp_shared_relu), "its own ReLU"),
    ("MLP", _mlp_class(_mlp_relu_after_last), "ReLU after the last Linear"),
    ("MLP", _mlp_class(_mlp_no_generator), "generator"),
    ("MLP", MLPSkipsFirst, "does not run through every layer"),
    ("MLP", MLPNoReturn, "no `return`"),
    ("SGD", SGDReset, "velocity is reset"),
    ("SGD", SGDNotInPlace, "in place"),
    ("SGD", SGDSkipsBN, "BW and Bb are not updated"),
    ("SGD", SGDDampening, "dampening"),
]


# --- fit_classifier: an image classifier from the library --------------------------------------

def _fit_net(generator):
    net = ref.MLP([784, 128, 10], generator=generator)
    net.layers.insert(1, ref.BatchNorm1d(128))
    return net


def fit_explicit(train_iter, num_epochs, lr, momentum, generator=None, on_epoch=None):
    """Layer by layer, one-hot rows from torch.eye, the epoch's loss as a running mean."""
    first = ref.MLP([784, 128, 10], generator=generator)
    net = first
    net.layers = [first.layers[0], ref.BatchNorm1d(128), *first.layers[1:]]
    criterion, opt = ref.CrossEntropyLoss(), ref.SGD(net, lr=lr, momentum=momentum)
    history = []
    for epoch in range(num_epochs):
        mean, seen = 0.0, 0
        for images, labels in train_iter:
            out = images.flatten(start_dim=1)
            for layer in net.layers:
                out = layer.forward(out)
            batch_loss = float(criterion.forward(out, torch.eye(10)[labels]))
            seen += len(labels)
            mean += (batch_loss - mean) * len(labels) / seen
            grad = criterion.backward()
            for layer in reversed(net.layers):
                grad = layer.backward(grad)
            opt.step()
        history.append(mean)
        if on_epoch:
            on_epoch(epoch + 1, net, mean)
    return net, history


def fit_tensor_losses(train_iter, num_epochs, lr, momentum, generator=None, on_epoch=None):
    """Losses accumulated as tensors, returned as a tuple; one-hot by scatter."""
    net = _fit_net(generator)
    loss_fn = ref.CrossEntropyLoss()
    sgd = ref.SGD(net, lr, momentum)
    losses = []
    for e in range(1, num_epochs + 1):
        total, n = torch.zeros(()), 0
        for X, y in train_iter:
            Y = torch.zeros(len(y), 10).scatter_(1, y[:, None], 1.0)
            total = total + loss_fn.forward(net.forward(X.view(X.shape[0], 784)), Y) * len(y)
            n += len(y)
            net.backward(loss_fn.backward())
            sgd.step()
        losses.append(total / n)
        if on_epoch is not None:
            on_epoch(e, net, losses[-1].item())
    return net, tuple(losses)


def _fit_variant(no_step=False, no_backward=False, eval_train=False, lr_scale=1.0,
                 bn_late=False, bn_after_relu=False, no_bn=False):
    def fit(train_iter, num_epochs, lr, momentum, generator=None, on_epoch=None):
        net = ref.MLP([784, 128, 10], generator=generator)
        bn = ref.BatchNorm1d(128)
        if bn_after_relu:
            net.layers.insert(2, bn)
        elif not bn_late and not no_bn:
            net.layers.insert(1, bn)
        loss, opt = ref.CrossEntropyLoss(), ref.SGD(net, lr * lr_scale, momentum=momentum)
        losses = []
        for epoch in range(1, num_epochs + 1):
            total, count = 0.0, 0
            for X, y in train_iter:
                A = X.reshape(len(X), -1)
                if eval_train:
                    for layer in net.layers:
                        A = layer.forward(A, eval=True) if isinstance(layer, ref.BatchNorm1d) \
                            else layer.forward(A)
                    logits = A
                else:
                    logits = net.forward(A)
                total += loss.forward(logits, F.one_hot(y, 10).float()).item() * len(y)
                count += len(y)
                if not no_backward:
                    net.backward(loss.backward())
                if not no_step:
                    opt.step()
            losses.append(total / count)
            if on_epoch is not None:
                on_epoch(epoch, net, losses[-1])
        if bn_late:
            net.layers.insert(1, bn)
        return net, losses
    return fit


def fit_autograd(train_iter, num_epochs, lr, momentum, generator=None, on_epoch=None):
    """The loss's gradient by autograd instead of CrossEntropyLoss.backward."""
    net = _fit_net(generator)
    opt = ref.SGD(net, lr, momentum=momentum)
    losses = []
    for epoch in range(1, num_epochs + 1):
        total = 0.0
        for X, y in train_iter:
            logits = net.forward(X.reshape(len(X), -1)).requires_grad_()
            loss = F.cross_entropy(logits, y)
            loss.backward()
            net.backward(logits.grad)
            opt.step()
            total += loss.item() * len(y)
        losses.append(total / len(train_iter.dataset))
        if on_epoch is not None:
            on_epoch(epoch, net, losses[-1])
    return net, losses


def fit_no_callback(train_iter, num_epochs, lr, momentum, generator=None, on_epoch=None):
    return ref.fit_classifier(train_iter, num_epochs, lr, momentum, generator)


CORRECT += [
    ("fit_classifier", ref.fit_classifier), ("fit_classifier", fit_explicit),
    ("fit_classifier", fit_tensor_losses),
]

BUGGY += [
    ("fit_classifier", _fit_variant(no_step=True), "optimizer.step()"),
    ("fit_classifier", _fit_variant(no_backward=True), "has no attribute"),
    ("fit_classifier", _fit_variant(eval_train=True), "training forward"),
    ("fit_classifier", _fit_variant(bn_late=True), "running statistics were never updated"),
    ("fit_classifier", _fit_variant(bn_after_relu=True), "right after the first Linear"),
    ("fit_classifier", _fit_variant(no_bn=True), "BatchNorm1d(128) layer is missing"),
    ("fit_classifier", fit_autograd, "from scratch"),
    ("fit_classifier", fit_no_callback, "on_epoch"),
]


def test_fit_classifier_bound_has_a_margin():
    """The graded bound on the digits lies well below what the reference reaches."""
    from grader.chapters.backprop import FIT_BUDGET

    c = FIT_BUDGET["digits"]
    assert c["bound"] <= 0.937 - 0.05 and FIT_BUDGET["Fashion-MNIST"]["bound"] <= 0.75


# --- D2L 5.3 exercises 2 and 3 -----------------------------------------------------------------

def test_bias_reference_matches_autograd():
    X, y = torch.randn(6, 3, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1, 0])
    W1, b1, W2 = (torch.randn(*s, dtype=torch.float64, requires_grad=True)
                  for s in ((3, 4), (4,), (4, 2)))
    ref._bias_objective(X, y, W1, b1, W2, 0.3).backward()
    for got, want in zip(ref.mlp_l2_backward_bias(X, y, W1.detach(), b1.detach(), W2.detach(),
                                                  0.3), (W1.grad, b1.grad, W2.grad)):
        torch.testing.assert_close(got, want)


def bias_classes(X, y, W1, b1, W2, lambd):
    """With the layers of part 1."""
    lin1, relu, lin2, sce = ref.Linear(1, 1), ref.ReLU(), ref.Linear(1, 1), ref.SoftmaxCrossEntropy()
    lin1.W, lin1.b = W1, b1
    lin2.W, lin2.b = W2, torch.zeros(W2.shape[1], dtype=W2.dtype)
    sce.forward(lin2.forward(relu.forward(lin1.forward(X))), y)
    lin1.backward(relu.backward(lin2.backward(sce.backward())))
    return lin1.dLdW + lambd * W1, lin1.dLdb, lin2.dLdW + lambd * W2


def bias_einsum(X, y, W1, b1, W2, lambd):
    Z = torch.einsum("nd,dh->nh", X, W1) + b1[None, :]
    H = torch.where(Z > 0, Z, torch.zeros_like(Z))
    O = H @ W2
    E = torch.exp(O - O.max(1, keepdim=True).values)
    G = (E / E.sum(1, keepdim=True) - torch.eye(W2.shape[1], dtype=X.dtype)[y]) / len(X)
    dZ = (G @ W2.T) * (Z > 0)
    return torch.einsum("nd,nh->dh", X, dZ) + lambd * W1, torch.ones(len(X), dtype=X.dtype) @ dZ, \
        H.T @ G + lambd * W2


def bias_regularised(X, y, W1, b1, W2, lambd):
    g1, gb, g2 = ref.mlp_l2_backward_bias(X, y, W1, b1, W2, lambd)
    return g1, gb + lambd * b1, g2


def bias_mean(X, y, W1, b1, W2, lambd):
    g1, gb, g2 = ref.mlp_l2_backward_bias(X, y, W1, b1, W2, lambd)
    return g1, gb / len(X), g2


def bias_forgotten(X, y, W1, b1, W2, lambd):
    g1, g2 = ref.mlp_l2_backward(X, y, W1, W2, lambd)
    n = len(X)
    P = torch.softmax(torch.relu(X @ W1) @ W2, 1)
    dZ = ((P - F.one_hot(y, W2.shape[1]).to(X.dtype)) / n @ W2.T) * (X @ W1 > 0)
    return g1, dZ.sum(0), g2


def bias_autograd(X, y, W1, b1, W2, lambd):
    leaves = [v.clone().requires_grad_() for v in (W1, b1, W2)]
    ref._bias_objective(X, y, *leaves, lambd).backward()
    return tuple(v.grad for v in leaves)


def memory_explicit(batch_size, num_inputs, num_hiddens, num_outputs):
    W = num_inputs * num_hiddens + num_hiddens * num_outputs
    X, Z, H, O = (batch_size * k for k in (num_inputs, num_hiddens, num_hiddens, num_outputs))
    peak = max(X + Z, Z + H, H + O)
    return W + peak, W + W + X + Z + H + O


def memory_loop(batch_size, num_inputs, num_hiddens, num_outputs):
    sizes = [num_inputs, num_hiddens, num_hiddens, num_outputs]  # X, Z, H, O per example
    params = sum(a * b for a, b in zip(sizes[::2], sizes[1::2]))
    pairs = [batch_size * (a + b) for a, b in zip(sizes, sizes[1:])]
    return params + max(pairs), 2 * params + batch_size * sum(sizes)


def memory_no_grads(batch_size, num_inputs, num_hiddens, num_outputs):
    p, t = ref.memory_footprint(batch_size, num_inputs, num_hiddens, num_outputs)
    return p, t - num_inputs * num_hiddens - num_hiddens * num_outputs


def memory_keeps_all(batch_size, num_inputs, num_hiddens, num_outputs):
    params = num_inputs * num_hiddens + num_hiddens * num_outputs
    return (params + batch_size * (num_inputs + 2 * num_hiddens + num_outputs),
            ref.memory_footprint(batch_size, num_inputs, num_hiddens, num_outputs)[1])


def memory_bytes(batch_size, num_inputs, num_hiddens, num_outputs):
    return tuple(4 * v for v in ref.memory_footprint(batch_size, num_inputs, num_hiddens,
                                                     num_outputs))


CORRECT += [
    ("mlp_l2_backward_bias", ref.mlp_l2_backward_bias), ("mlp_l2_backward_bias", bias_classes),
    ("mlp_l2_backward_bias", bias_einsum),
    ("memory_footprint", ref.memory_footprint), ("memory_footprint", memory_explicit),
    ("memory_footprint", memory_loop),
]

BUGGY += [
    ("mlp_l2_backward_bias", bias_regularised, "the bias is regularised"),
    ("mlp_l2_backward_bias", bias_mean, "as a mean"),
    ("mlp_l2_backward_bias", bias_forgotten, "left out of the forward pass"),
    ("mlp_l2_backward_bias", bias_autograd, "from scratch"),
    ("memory_footprint", memory_no_grads, "without the gradients"),
    ("memory_footprint", memory_keeps_all, "free each one after its last use"),
    ("memory_footprint", memory_bytes, "bytes instead of floats"),
]
