"""05_dropout: dropout (D2L 5.6).

Reference implementations first, then one check per exercise. A check's first cases are the
visible ones (a worked example, fast); the rest run only when grading (`t.hidden`).

`dropout_layer` is random: its checks are statistical (`grader.cases.expect_stat`, Z = 5
standard errors, a correct answer fails one comparison with probability 5.7e-7).
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from grader.cases import Z, expect_stat, gen, randn, tol
from grader.feedback import Mismatch, expect_close, expect_tensor, fmt_number, type_name
from grader.registry import Chapter

CHAPTER = Chapter("05_dropout", "Dropout")

# --- references ---------------------------------------------------------------------------


def dropout_layer(X, dropout, generator=None):
    if not 0 <= dropout <= 1:
        raise ValueError(f"dropout must be in [0, 1], got {dropout}")
    if dropout == 1:
        return torch.zeros_like(X)
    mask = torch.rand(X.shape, generator=generator, device=X.device) > dropout
    return mask.to(X.dtype) * X / (1.0 - dropout)


class DropoutMLP(nn.Module):
    def __init__(self, num_inputs, num_outputs, num_hiddens1, num_hiddens2, dropout1, dropout2):
        super().__init__()
        self.dropout1, self.dropout2 = dropout1, dropout2
        self.lin1 = nn.Linear(num_inputs, num_hiddens1)
        self.lin2 = nn.Linear(num_hiddens1, num_hiddens2)
        self.lin3 = nn.Linear(num_hiddens2, num_outputs)

    def forward(self, X):
        H1 = torch.relu(self.lin1(X.reshape((X.shape[0], -1))))
        if self.training:
            H1 = dropout_layer(H1, self.dropout1)
        H2 = torch.relu(self.lin2(H1))
        if self.training:
            H2 = dropout_layer(H2, self.dropout2)
        return self.lin3(H2)


def evaluate_loss(net, data_iter, loss):
    was_training = net.training
    net.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for X, y in data_iter:
            out = net(X)
            l = loss(out, y.reshape(out.shape) if out.shape[1:] == (1,) else y)
            total += float(l.sum())
            count += len(l)
    net.train(was_training)
    return total / count


# --- dropout_layer ----------------------------------------------------------------------------

DROPOUT_FILE = os.path.join(os.path.dirname(torch.__file__), "nn", "modules", "dropout.py")
NO_LIBRARY_DROPOUT = {F.dropout: "torch.nn.functional.dropout", torch.dropout: "torch.dropout",
                      F.dropout1d: "F.dropout1d", F.dropout2d: "F.dropout2d",
                      F.alpha_dropout: "F.alpha_dropout", torch.dropout_: "torch.dropout_"}
if hasattr(torch, "native_dropout"):
    NO_LIBRARY_DROPOUT[torch.native_dropout] = "torch.native_dropout"


def _inputs(shape, seed, dtype):
    """No zeros, both signs: every zero in the output was dropped, every ratio is telling."""
    x = randn(*shape, seed=seed)
    return (torch.sign(x) * (x.abs() + 0.5)).to(dtype)


def _drop(t, fn, X, p, generator, what):
    out = t.call(fn, X, p, generator, what=what, forbidden=NO_LIBRARY_DROPOUT,
                 forbidden_python=[(DROPOUT_FILE, None)])
    if not isinstance(out, torch.Tensor):
        raise Mismatch(f"{what} should return a torch.Tensor, but returned {type_name(out)}"
                       + ("\n  likely cause: the function has no `return` statement"
                          if out is None else ""))
    if out.dtype != X.dtype:
        raise Mismatch(f"{what} returned dtype {out.dtype}, expected {X.dtype} (X's dtype)\n"
                       "  likely cause: a tensor created without dtype=X.dtype (torch.zeros, "
                       "or a mask converted with .float())")
    if out.shape != X.shape:
        raise Mismatch(f"{what} returned shape {tuple(out.shape)}, expected {tuple(X.shape)} "
                       "(X's shape)")
    if torch.isnan(out).any():
        raise Mismatch(f"{what} returned NaN" + (
            "\n  likely cause: dropout = 1 divides by 1 - dropout = 0 (0 / 0 is NaN); return "
            "zeros for dropout == 1 before scaling" if p == 1 else ""))
    return out


def _scale(out, X, p, what):
    """Every element is 0 or X / (1 - p); returns the mask of zeroed elements."""
    zero = out == 0
    kept = ~zero
    if not kept.any():
        return zero
    ratio = (out[kept] / X[kept]).double()
    s = 1 / (1 - p)
    if torch.allclose(ratio, torch.full_like(ratio, s), rtol=1e-5, atol=0):
        return zero
    med = ratio.median().item()
    if not torch.allclose(ratio, torch.full_like(ratio, med), rtol=1e-4, atol=0):
        cause = ("each element should be either 0 or X / (1 - dropout); multiply X by a 0/1 "
                 "mask, then scale")
    elif abs(med - 1) < 1e-4:
        cause = ("the survivors are not rescaled: divide them by 1 - dropout (inverted "
                 "dropout), so that the expected output is X")
    elif abs(med - (1 - p)) < 1e-4:
        cause = "the survivors are multiplied by 1 - dropout; divide by 1 - dropout instead"
    elif p > 0 and abs(med - 1 / p) < 1e-4 * med:
        cause = "the survivors are divided by dropout; divide by 1 - dropout instead"
    else:
        cause = f"the survivors are scaled by {fmt_number(med)}"
    raise Mismatch(f"{what}: the elements that are not zeroed should equal X / (1 - dropout) "
                   f"= {fmt_number(s)} * X, but are {fmt_number(med)} * X (median ratio)\n"
                   f"  likely cause: {cause}")


def _fraction(zero, p, what):
    N = zero.numel()
    frac = zero.double().mean().item()
    se = math.sqrt(p * (1 - p) / N)
    cause = "each element should be zeroed with probability dropout (torch.rand(X.shape) > " \
            "dropout keeps an element)"
    if p not in (0.5,) and abs(frac - (1 - p)) <= Z * se:
        cause = ("a fraction `dropout` of the elements is kept instead of dropped: keep an "
                 "element where torch.rand(...) > dropout (it then survives with probability "
                 "1 - dropout)")
    elif frac == 0:
        cause = "nothing is dropped: the mask keeps every element"
    expect_stat(frac, p, se, f"{what}: the fraction of elements zeroed", cause)


def _pairs_zeroed(a, b, p, what, cause):
    """Two halves of independent masks: both zero with probability p**2."""
    N = a.numel()
    both = (a & b).double().mean().item()
    expect_stat(both, p * p, math.sqrt(p * p * (1 - p * p) / N), what, cause)


def _independence(zero, p, what):
    if zero.dim() < 2:
        zero = zero.reshape(-1, 1) if zero.numel() % 2 else zero.reshape(2, -1).T
    M = zero.reshape(zero.shape[0], -1)
    R, C = M.shape
    if R >= 2:
        r = R // 2 * 2
        _pairs_zeroed(M[0:r:2], M[1:r:2], p,
                      f"{what}: how often an element and the one below it are both zeroed",
                      "one mask shared by all rows (the examples): draw the mask with X's full "
                      "shape, torch.rand(X.shape), so that every element gets its own number")
    if C >= 2:
        c = C // 2 * 2
        _pairs_zeroed(M[:, 0:c:2], M[:, 1:c:2], p,
                      f"{what}: how often two neighbouring elements of a row are both zeroed",
                      "whole rows (or columns) are dropped together: every element needs its "
                      "own random number, torch.rand(X.shape)")


def _dropout_case(t, fn, shape, p, dtype, seed):
    X = _inputs(shape, seed, dtype)
    what = f"dropout_layer(X {tuple(shape)} {str(dtype)[6:]}, dropout={p}, generator=g)"
    out = _drop(t, fn, X, p, gen(seed), what)
    zero = _scale(out, X, p, what)
    _fraction(zero, p, what)
    _independence(zero, p, what)


def _edge(t, fn, X, p):
    what = f"dropout_layer(X {tuple(X.shape)} {str(X.dtype)[6:]}, dropout={p})"
    out = _drop(t, fn, X, p, gen(0), what)
    if p == 0:
        expect_tensor(out, X, what=what + " (nothing is dropped: X's values)", atol=0, rtol=1e-7,
                      likely={"everything is dropped at dropout = 0: the mask keeps the elements "
                              "where torch.rand(...) < dropout; keep those where it is > dropout":
                              lambda: torch.zeros_like(X)})
    else:
        expect_tensor(out, torch.zeros_like(X), what=what + " (everything is dropped: zeros)",
                      atol=0, rtol=0)


@CHAPTER.exercise("dropout_layer", points=3, d2l=("dropout_layer",))
def check_dropout_layer(t, fn):
    with t.case("worked example: X (100, 100) float32, dropout = 0.5: about half the elements "
                "zeroed, the others doubled", weight=2):
        _dropout_case(t, fn, (100, 100), 0.5, torch.float32, 0)
    with t.case("dropout = 0 returns X's values, dropout = 1 returns zeros"):
        X = _inputs((3, 4), 1, torch.float32)
        _edge(t, fn, X, 0.0)
        _edge(t, fn, X, 1.0)
    if not t.hidden:
        return
    for i, (shape, p, dtype) in enumerate((
            ((200, 300), 0.2, torch.float64), ((50, 40), 0.8, torch.float32),
            ((10000,), 0.3, torch.float32), ((20, 30, 40), 0.5, torch.float64),
            ((100, 100), 0.95, torch.float32), ((64, 256), 0.1, torch.float32))):
        with t.case(f"X {shape} {dtype}, dropout = {p}: scale, fraction zeroed, independence",
                    weight=2):
            _dropout_case(t, fn, shape, p, dtype, 10 + i)
    with t.case("edge cases in float64: dropout = 0 and 1 (also as the ints 0 and 1)"):
        X = _inputs((7, 5), 2, torch.float64)
        for p in (0.0, 1.0, 0, 1):
            _edge(t, fn, X, p)
    with t.case("dropout outside [0, 1] raises ValueError"):
        X = _inputs((4, 4), 3, torch.float32)
        for p in (-0.1, 1.5, 2):
            what = f"dropout_layer(X, dropout={p})"
            try:
                t.call(fn, X, p, gen(0), what=what)
            except Mismatch as failure:
                if str(failure).startswith(f"{what} raised ValueError"):
                    continue
                raise Mismatch(f"{failure}\n  likely cause: `raise ValueError(...)` for a "
                               "dropout probability outside [0, 1] (not assert, which raises "
                               "AssertionError and disappears with python -O)") from None
            raise Mismatch(f"{what} returned without raising ValueError\n  likely cause: no "
                           "check that 0 <= dropout <= 1")
    with t.case("two calls draw independent masks; the mean is preserved", weight=2):
        p = 0.4
        X = torch.full((300, 200), 2.0)
        g = gen(21)
        first = _drop(t, fn, X, p, g, "dropout_layer(X, 0.4, g), first call")
        second = _drop(t, fn, X, p, g, "dropout_layer(X, 0.4, g), second call with the same g")
        _pairs_zeroed(first == 0, second == 0, p,
                      "how often an element is zeroed in both of two calls",
                      "the two calls dropped the same elements: the generator is re-seeded, "
                      "or one mask is reused; draw a fresh mask on every call")
        N = X.numel()
        expect_stat(first.double().mean().item(), 2.0, 2.0 * math.sqrt(p / (1 - p) / N),
                    "the mean of dropout_layer(X, 0.4) for X = 2 everywhere",
                    "inverted dropout preserves the expectation: E[output] = X")
        third = _drop(t, fn, X, p, None, "dropout_layer(X, 0.4) without a generator")
        fourth = _drop(t, fn, X, p, None, "dropout_layer(X, 0.4), again without a generator")
        _fraction(third == 0, p, "dropout_layer(X, 0.4) without a generator")
        if torch.equal(third, fourth):
            raise Mismatch("two calls without a generator gave the same result\n  likely "
                           "cause: a fixed seed inside the function (torch.manual_seed)")
    with t.case("all randomness comes from `generator`"):
        X = _inputs((30, 30), 4, torch.float32)
        torch.manual_seed(1)
        a = _drop(t, fn, X, 0.5, gen(7), "dropout_layer(X, 0.5, generator seeded 7)")
        torch.manual_seed(2)
        b = _drop(t, fn, X, 0.5, gen(7), "dropout_layer(X, 0.5, generator seeded 7)")
        c = _drop(t, fn, X, 0.5, gen(8), "dropout_layer(X, 0.5, generator seeded 8)")
        if not torch.equal(a, b):
            raise Mismatch("two calls with generators of the same seed gave different results\n"
                           "  likely cause: torch.rand called without `generator=generator`, so "
                           "it uses the global random state")
        if torch.equal(a, c):
            raise Mismatch("generators of different seeds gave the same result\n  likely "
                           "cause: the generator is not used, or re-seeded inside")


# --- DropoutMLP -----------------------------------------------------------------------------


def _set_weights(net, seed, dtype, positive=True):
    """positive: pre-activations all positive (biases 2 and 3, small weights), so that a zero is
    a dropped unit. Otherwise zero-mean weights and biases, so that the ReLUs matter."""
    with torch.no_grad():
        for j, (lin, bias, scale) in enumerate(((net.lin1, 2.0, 0.3), (net.lin2, 3.0, 0.15),
                                                (net.lin3, 0.0, 0.5))):
            w = randn(*lin.weight.shape, seed=seed + j) / math.sqrt(lin.in_features)
            lin.weight.copy_(w * (scale if positive else 1.0))
            if lin.bias is not None:
                lin.bias.copy_(torch.full_like(lin.bias, bias) if positive else
                               randn(*lin.bias.shape, seed=seed + 10 + j) * 0.5)
    return net.to(dtype)


def _plain_forward(net, X):
    H1 = torch.relu(net.lin1(X.reshape(X.shape[0], -1)))
    return net.lin3(torch.relu(net.lin2(H1)))


def _build(t, cls, args):
    what = f"DropoutMLP{args}"
    net = t.call(cls, *args, what=what)
    if not isinstance(net, nn.Module):
        raise Mismatch(f"{what} should be an nn.Module, but is {type_name(net)}\n  likely cause: "
                       "class DropoutMLP(nn.Module) with super().__init__() first")
    n_in, n_out, h1, h2 = args[:4]
    for name, (i, o) in (("lin1", (n_in, h1)), ("lin2", (h1, h2)), ("lin3", (h2, n_out))):
        lin = getattr(net, name, None)
        if not isinstance(lin, nn.Linear):
            raise Mismatch(f"{what} should have an nn.Linear attribute `{name}`, but "
                           f"{name} is {type_name(lin)}")
        if (lin.in_features, lin.out_features) != (i, o):
            raise Mismatch(f"{what}.{name} is nn.Linear({lin.in_features}, {lin.out_features}), "
                           f"expected nn.Linear({i}, {o})")
    return net


class _Capture:
    """The inputs of lin2 and lin3 and the output of lin3 of the last forward pass."""

    def __init__(self, net):
        self.seen = {}
        self.handles = [
            net.lin2.register_forward_pre_hook(lambda m, a: self.seen.__setitem__("in2", a[0])),
            net.lin3.register_forward_pre_hook(lambda m, a: self.seen.__setitem__("in3", a[0])),
            net.lin3.register_forward_hook(lambda m, a, o: self.seen.__setitem__("out3", o))]

    def get(self, key, what):
        if key not in self.seen:
            layer = {"in2": "lin2", "in3": "lin3", "out3": "lin3"}[key]
            raise Mismatch(f"{what}: net.{layer} was not called in forward; call the layers "
                           "as modules, self.lin1(X), self.lin2(H1), self.lin3(H2)")
        return self.seen[key].detach()

    def remove(self):
        for h in self.handles:
            h.remove()


def _forward(t, net, X, what):
    try:
        return t.call(net, X, what=what)
    except Mismatch as failure:
        if "mat1 and mat2" in str(failure) and X.dim() > 2:
            text = str(failure).split("\n  likely cause:")[0]
            raise Mismatch(f"{text}\n  likely cause: X is not flattened: reshape it to "
                           "(X.shape[0], -1) before lin1") from None
        raise


def _eval_case(t, net, X, what, dtype):
    net.eval()
    expected = _plain_forward(net, X).detach()
    out1 = _forward(t, net, X, what)
    out2 = _forward(t, net, X, what)
    if not isinstance(out1, torch.Tensor) or not isinstance(out2, torch.Tensor):
        raise Mismatch(f"{what} should return a tensor, but returned {type_name(out1)}")
    if out1.shape == out2.shape and not torch.equal(out1, out2):
        raise Mismatch(f"{what}: two forward passes in evaluation mode (net.eval()) gave "
                       "different outputs\n  likely cause: dropout is applied in evaluation mode "
                       "too; apply it only `if self.training`")
    flat = X.reshape(len(X), -1)
    likely = {"ReLU is missing after lin2":
              lambda: net.lin3(net.lin2(torch.relu(net.lin1(flat)))),
              "ReLU is missing after lin1": lambda: net.lin3(torch.relu(net.lin2(net.lin1(flat)))),
              "a ReLU after lin3: the output layer has no activation (logits)":
              lambda: torch.relu(expected)}
    expect_tensor(out1.detach(), expected, what=what,
                  likely={k: (lambda f=f: f().detach()) for k, f in likely.items()},
                  **tol(dtype, 10))


def _mlp_case(t, cls, args, batch, image, seed, dtype=torch.float32):
    n_in, n_out, h1, h2, p1, p2 = args
    net = _set_weights(_build(t, cls, args), seed, dtype, positive=False)
    X = torch.rand(batch, *image, generator=gen(seed), dtype=torch.float64).to(dtype)
    what = f"DropoutMLP{args} on X {tuple(X.shape)}"
    _eval_case(t, net, X, what + " in eval mode (no dropout)", dtype)
    _set_weights(net, seed, dtype)
    expected = _plain_forward(net, X).detach()
    _eval_case(t, net, X, what + " in eval mode (no dropout)", dtype)
    net.train()
    cap = _Capture(net)
    try:
        out = _forward(t, net, X, what + " in training mode")
        in2, in3 = cap.get("in2", what), cap.get("in3", what)
        out3 = cap.get("out3", what)
    finally:
        cap.remove()
    H1 = torch.relu(net.lin1(X.reshape(len(X), -1))).detach()
    for label, inp, H, p, other in (("lin2 (after dropout1)", in2, H1, p1, p2),
                                    ("lin3 (after dropout2)", in3, None, p2, p1)):
        if H is None:
            H = torch.relu(net.lin2(in2)).detach()
        where = f"{what} in training mode, the input of {label}"
        if inp.shape != H.shape:
            raise Mismatch(f"{where} has shape {tuple(inp.shape)}, expected {tuple(H.shape)}")
        zero = inp == 0
        if p == 0:
            expect_tensor(inp, H, what=where + f" with dropout {p} (nothing dropped)",
                          **tol(dtype, 10))
            continue
        kept = ~zero
        ratio = (inp[kept] / H[kept]).double()
        if kept.any() and not torch.allclose(ratio, torch.full_like(ratio, 1 / (1 - p)),
                                             rtol=1e-4, atol=0):
            if torch.allclose(ratio, torch.full_like(ratio, 1 / (1 - other)), rtol=1e-4,
                              atol=0) and other not in (0, 1):
                cause = "dropout1 and dropout2 are swapped"
            elif torch.allclose(ratio, torch.ones_like(ratio), rtol=1e-4, atol=0):
                cause = "no dropout in training mode (or the survivors are not rescaled)"
            else:
                cause = "dropout is applied somewhere else than after relu(lin1) and relu(lin2)"
            raise Mismatch(f"{where}: the units that are not dropped should be relu(...) / "
                           f"(1 - {p}) = {fmt_number(1 / (1 - p))} * relu(...), but are "
                           f"{fmt_number(ratio.median().item())} times that\n"
                           f"  likely cause: {cause}")
        frac = zero.double().mean().item()
        se = math.sqrt(p * (1 - p) / zero.numel())
        cause = ("no dropout in training mode: `if self.training:` apply dropout_layer"
                 if frac == 0 else "dropout1 and dropout2 are swapped"
                 if other != p and abs(frac - other) <= Z * math.sqrt(other * (1 - other)
                                                                      / zero.numel())
                 else f"units after {label.split()[0]} should be dropped with probability {p}")
        expect_stat(frac, p, se, f"{where}: the fraction of units zeroed", cause)
    if out3.shape != out.shape or not torch.equal(out3, out.detach()):
        raise Mismatch(f"{what} in training mode: the output should be lin3's output\n"
                       "  likely cause: dropout (or an activation) applied to the output layer")
    with torch.no_grad():
        again = net(X)
    if torch.equal(again, out):
        raise Mismatch(f"{what}: two forward passes in training mode gave the same output\n"
                       "  likely cause: the dropout mask is fixed (a seed set inside forward, "
                       "or a mask drawn once in __init__)")
    net.eval()
    expect_tensor(_forward(t, net, X, what).detach(), expected,
                  what=what + " in eval mode after training mode", **tol(dtype, 10))


@CHAPTER.exercise("DropoutMLP", points=2)
def check_dropout_mlp(t, cls):
    with t.case("worked example: DropoutMLP(16, 3, 64, 32, 0.2, 0.5) on X (128, 1, 4, 4)"):
        _mlp_case(t, cls, (16, 3, 64, 32, 0.2, 0.5), 128, (1, 4, 4), 0)
    if not t.hidden:
        return
    for i, (args, batch, image, dtype) in enumerate((
            ((64, 10, 256, 128, 0.5, 0.2), 256, (1, 8, 8), torch.float32),
            ((12, 2, 100, 100, 0.0, 0.9), 200, (3, 2, 2), torch.float64),
            ((784, 10, 64, 64, 0.3, 0.7), 200, (1, 28, 28), torch.float32),
            ((5, 4, 128, 96, 0.1, 0.1), 300, (5,), torch.float32))):
        with t.case(f"DropoutMLP{args} on X ({batch}, {', '.join(map(str, image))}), {dtype}"):
            _mlp_case(t, cls, args, batch, image, 10 + i, dtype)


# --- evaluate_loss --------------------------------------------------------------------------


class _Spy(nn.Module):
    """A small net that records the mode and the grad mode of every forward pass; in training
    mode it drops inputs, so that a loss computed in training mode is off."""

    def __init__(self, d_in, d_out, seed, dtype):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d_in, 8), nn.Tanh(), nn.Linear(8, d_out)).to(dtype)
        with torch.no_grad():
            for j, p in enumerate(self.body.parameters()):
                p.copy_(randn(*p.shape, seed=seed + j))
        self.log = []

    def forward(self, X):
        self.log.append((self.training, all(m.training == self.training
                                            for m in self.modules()), torch.is_grad_enabled()))
        X = X.reshape(X.shape[0], -1)
        if self.training:
            X = X * (torch.rand(X.shape, dtype=X.dtype) > 0.5) * 2
        return self.body(X)


def _loss_data(n, batch_size, d_in, d_out, classes, seed, dtype, as_loader):
    X = randn(n, d_in, seed=seed, dtype=dtype)
    if classes:
        y = torch.randint(0, d_out, (n,), generator=gen(seed + 1))
    else:
        y = randn(n, 1, seed=seed + 1, dtype=dtype)
    if as_loader:
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y),
                                           batch_size=batch_size, shuffle=False)
    return [(X[i:i + batch_size], y[i:i + batch_size]) for i in range(0, n, batch_size)]


def _batch_means(net, data_iter, loss):
    with torch.no_grad():
        means = [float(loss(net(X), y).mean()) for X, y in data_iter]
    return sum(means) / len(means)


def _loss_case(t, fn, n, batch_size, classes, start_training, seed, dtype=torch.float32,
               as_loader=True):
    d_in, d_out = 6, (4 if classes else 1)
    net = _Spy(d_in, d_out, seed, dtype)
    data_iter = _loss_data(n, batch_size, d_in, d_out, classes, seed, dtype, as_loader)
    loss = nn.CrossEntropyLoss(reduction="none") if classes else nn.MSELoss(reduction="none")
    net.eval()
    expected = evaluate_loss(net, data_iter, loss)
    per_batch = _batch_means(net, data_iter, loss)
    net.train(start_training)
    net.log.clear()
    mode = "training" if start_training else "evaluation"
    what = (f"evaluate_loss(net, data_iter, loss) over {n} examples in batches of {batch_size}, "
            f"net in {mode} mode")
    got = t.call(fn, net, data_iter, loss, what=what)
    if not net.log:
        raise Mismatch(f"{what}: net was never called")
    if any(training for training, _, _ in net.log):
        raise Mismatch(f"{what}: net was in training mode while evaluating, so dropout was "
                       "still on\n  likely cause: net.eval() is not called before the loop")
    if not all(uniform for _, uniform, _ in net.log):
        raise Mismatch(f"{what}: some of net's submodules were in training mode\n  likely "
                       "cause: call net.eval() on the whole net")
    if any(grad for _, _, grad in net.log):
        raise Mismatch(f"{what}: gradients were recorded during evaluation (wasted memory and "
                       "time)\n  likely cause: the loop is not inside `with torch.no_grad():`")
    after = "training" if net.training else "evaluation"
    if net.training != start_training or any(m.training != start_training
                                             for m in net.modules()):
        raise Mismatch(f"{what}: net was in {mode} mode before and is in {after} mode "
                       "afterwards; its mode afterwards should be what it was before\n  likely "
                       "cause: " + ("the mode is not restored: remember net.training and call "
                                    "net.train(was_training) at the end" if start_training else
                                    "net.train() at the end switches an evaluating net to "
                                    "training; restore the mode it had instead"))
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.detach().item()
    cause = None
    if isinstance(got, int | float) and abs(got - per_batch) <= 1e-5 * abs(per_batch) and \
            abs(per_batch - expected) > 1e-5 * abs(expected):
        cause = ("the mean of the per-batch means: the last batch is smaller, so its "
                 "examples weigh more; add up the per-example losses and divide by the number "
                 "of examples")
    full = expected * n / (math.ceil(n / batch_size) * min(batch_size, n))
    if isinstance(got, int | float) and abs(got - full) <= 1e-5 * abs(full) and \
            abs(full - expected) > 1e-5 * abs(expected):
        cause = ("divided by the number of batches times the batch size, but the last batch is "
                 "smaller; count the examples (len(y) of each batch)")
    expect_close(got, expected, what=what, atol=1e-6, rtol=1e-5, cause=cause)


@CHAPTER.exercise("evaluate_loss", points=2, d2l=("evaluate_loss",))
def check_evaluate_loss(t, fn):
    with t.case("worked example: 10 examples in batches of 4 (4, 4, 2), squared loss, net in "
                "training mode"):
        _loss_case(t, fn, 10, 4, False, True, 0, as_loader=False)
    if not t.hidden:
        return
    for i, (n, bs, classes, start, dtype, loader) in enumerate((
            (50, 8, True, True, torch.float32, True),
            (50, 8, True, False, torch.float32, True),
            (33, 32, False, True, torch.float64, True),
            (100, 7, True, False, torch.float64, False),
            (64, 16, False, False, torch.float32, False),
            (5, 10, True, True, torch.float32, True))):
        with t.case(f"{n} examples in batches of {bs}, "
                    f"{'cross-entropy' if classes else 'squared'} loss, {dtype}, net in "
                    f"{'training' if start else 'evaluation'} mode"):
            _loss_case(t, fn, n, bs, classes, start, 20 + i, dtype, loader)
