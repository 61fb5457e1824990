"""06_initialization: numerical stability and initialisation (D2L 5.4).

Weights follow the `nn.Linear` convention, shape `(fan_out, fan_in)`. The initialisers are
random, so their checks are statistical (variance, bounds, the shape of the distribution) with
the false-alarm probability stated by `grader.cases.expect_stat`; a few further cases check the
contract exactly: in place, returns `W`, reproducible from `generator`, no `torch.nn.init`.
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn

from grader.cases import FALSE_ALARM, Z, expect_stat, gen, randn
from grader.feedback import Mismatch, fmt_number, fmt_value
from grader.registry import Chapter

CHAPTER = Chapter("06_initialization", "Numerical stability and initialisation")

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


# --- shared pieces of the checks -----------------------------------------------------------

INIT_PY = os.path.join(os.path.dirname(torch.__file__), "nn", "init.py")
NO_NN_INIT = [(INIT_PY, None)]  # any function of torch/nn/init.py


def _blank(*shape, dtype=torch.float32):
    """A weight to initialise, filled with a value no initialiser draws twice."""
    return torch.full(shape, 123.0, dtype=dtype)


def _moments(W):
    w = W.detach().double().flatten()
    n = w.numel()
    m2 = (w ** 2).mean().item()
    m4 = (w ** 4).mean().item()
    return w, n, m2, m4


def _init_call(t, fn, W, args, what):
    """Call an initialiser on W; check it fills W in place and returns it."""
    before = W.detach().clone()
    out = t.call(fn, W, *args, what=what, may_modify=True, forbidden_python=NO_NN_INIT)
    if out is not W:
        if isinstance(out, torch.Tensor) and torch.equal(W.detach(), before):
            raise Mismatch(f"{what} returned a new tensor and left W unchanged: an initialiser "
                           "fills W in place (W.uniform_(...), W.normal_(...) or W[...] = ...) "
                           "and returns W itself\n  likely cause: not in place")
        if out is None:
            raise Mismatch(f"{what} returned None; it should fill W in place and return W "
                           "itself (so that calls can be chained)\n"
                           "  likely cause: the function has no `return W`")
        raise Mismatch(f"{what} returned {fmt_value(out)}, not W itself; fill W in place and "
                       "`return W`\n  likely cause: not in place (a new tensor is returned)")
    if torch.equal(W.detach(), before):
        raise Mismatch(f"{what} left W unchanged\n  likely cause: the values are written to a "
                       "new tensor, not into W (not in place)")
    if W.dtype != before.dtype or W.shape != before.shape:
        raise Mismatch(f"{what} changed W's dtype or shape")
    if not torch.isfinite(W).all():
        raise Mismatch(f"{what} filled W with non-finite values")
    if W.detach().flatten().unique().numel() == 1:
        raise Mismatch(f"{what} filled W with the constant {fmt_number(W.flatten()[0].item())}\n"
                       "  likely cause: a constant initialisation (every hidden unit would stay "
                       "identical); draw random values")
    return W


def _scale(t, W, expected_var, causes: dict, what, kurt_expected):
    """The variance of W against `expected_var`; a miss names the matching buggy variance."""
    w, n, m2, m4 = _moments(W)
    var_w2 = (kurt_expected - 1) * expected_var ** 2  # Var(w^2) of the expected distribution
    se = math.sqrt(var_w2 / n)
    if abs(m2 - expected_var) > Z * se:
        cause = next((c for c, v in causes.items()
                      if abs(m2 - v) <= Z * math.sqrt((kurt_expected - 1) * v ** 2 / n)
                      and abs(v - expected_var) > 2 * Z * se), "")
        expect_stat(m2, expected_var, se, f"the variance E[w^2] of {what}", cause)
    expect_stat(w.mean().item(), 0.0, math.sqrt(expected_var / n), f"the mean of {what}",
                "the distribution should be centred at 0")
    return w, n, m2, m4


def _reproducible(t, fn, make_W, args, what):
    with t.case("all randomness comes from `generator`"):
        torch.manual_seed(1)
        a = _init_call(t, fn, make_W(), args(7), what).detach().clone()
        torch.manual_seed(2)
        b = _init_call(t, fn, make_W(), args(7), what).detach().clone()
        c = _init_call(t, fn, make_W(), args(8), what).detach().clone()
        if not torch.equal(a, b):
            raise Mismatch(f"{what}: two calls with generators of the same seed gave different "
                           "values\n  likely cause: a random function called without "
                           "`generator=generator`, so it uses the global random state")
        if torch.equal(a, c):
            raise Mismatch(f"{what}: generators of different seeds gave the same values\n"
                           "  likely cause: the generator is not used, or re-seeded inside")


def _parameter_case(t, fn, args, what):
    with t.case("W is an nn.Parameter (requires grad), as in nn.Linear"):
        W = nn.Parameter(_blank(40, 30))
        _init_call(t, fn, W, args, what)
        if not isinstance(W, nn.Parameter) or not W.requires_grad or W.grad_fn is not None:
            raise Mismatch(f"{what}: W should stay a leaf parameter that requires grad\n"
                           "  likely cause: the fill was recorded by autograd; do it inside "
                           "`with torch.no_grad():`")


def _uniform_shape(w, n, m2, a, what, causes_var):
    """Bounds of U(-a, a): nothing beyond a, and the extremes close to a."""
    top = w.abs().max().item()
    kurt = (w ** 4).mean().item() / m2 ** 2
    if top > a * (1 + 1e-5):
        normal = abs(kurt - 3) < Z * math.sqrt(24 / n)
        raise Mismatch(
            f"{what}: the largest |w| is {fmt_number(top)}, beyond the bound a = {fmt_number(a)} "
            f"of U(-a, a); the kurtosis E[w^4]/E[w^2]^2 is {kurt:.2f} (a uniform's is 1.8, a "
            "normal's 3)\n  likely cause: "
            + ("drawn from a normal distribution instead of uniform" if normal else
               next((c for c, v in causes_var.items() if abs(m2 - v) < 0.05 * v),
                    "the bound a is too large")))
    eps = -math.log(FALSE_ALARM) / n  # P(max |w| < a (1 - eps)) = (1 - eps)^n <= FALSE_ALARM
    if top < a * (1 - eps):
        cause = next((c for c, v in causes_var.items() if abs(m2 - v) < 0.05 * v),
                     "the bound a is too small")
        raise Mismatch(
            f"{what}: the largest |w| is {fmt_number(top)}, but with {n} draws from U(-a, a) "
            f"it exceeds a (1 - {eps:.1e}) = {fmt_number(a * (1 - eps))} except with "
            f"probability {FALSE_ALARM:.1e}\n  likely cause: {cause}")
    # kurtosis of U(-a, a) is 1.8; its standard error is sqrt(1.317 / n) (delta method)
    expect_stat(kurt, 1.8, math.sqrt(1.317 / n), f"the kurtosis E[w^4]/E[w^2]^2 of {what}",
                "not a uniform distribution")


def _normal_shape(w, n, m2, what):
    kurt = (w ** 4).mean().item() / m2 ** 2
    expect_stat(kurt, 3.0, math.sqrt(24 / n), f"the kurtosis E[w^4]/E[w^2]^2 of {what}",
                "uniform instead of normal (a uniform's kurtosis is 1.8, a normal's 3): use "
                "W.normal_(0, std) or torch.randn")


# --- xavier_uniform_ -----------------------------------------------------------------------


def _xavier_uniform_case(t, fn, shape, gain, dtype, seed, pass_gain=True):
    fan_out, fan_in = shape
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    args = (gain, gen(seed)) if pass_gain else ()
    what = (f"xavier_uniform_(W {tuple(shape)} {str(dtype).replace('torch.', '')}"
            + (f", gain={gain:g}, generator=g)" if pass_gain else ")"))
    W = _blank(*shape, dtype=dtype)
    _init_call(t, fn, W, args, what)
    var = a * a / 3
    s = math.sqrt(6.0 / (fan_in + fan_out))
    causes = {
        "the gain is missing (a = sqrt(6 / (fan_in + fan_out)), not multiplied by gain)":
            s * s / 3,
        "fan_in only: a = gain * sqrt(3 / fan_in) uses fan_in instead of (fan_in + fan_out) / 2":
            gain ** 2 / fan_in,
        "fan_in only: a = gain * sqrt(6 / fan_in) uses fan_in instead of fan_in + fan_out":
            2 * gain ** 2 / fan_in,
        "the variance 2 / (fan_in + fan_out) is used as the standard deviation (a square root "
        "is missing)": (gain * 6.0 / (fan_in + fan_out)) ** 2 / 3,
        "the standard deviation is used as the bound: U(-std, std) has variance std**2 / 3; "
        "the bound is a = sqrt(3) * std": (gain * math.sqrt(2.0 / (fan_in + fan_out))) ** 2 / 3,
        "the gain is applied twice (or squared)": gain ** 4 * s * s / 3,
    }
    w, n, m2, _ = _moments(W)
    _uniform_shape(w, n, m2, a, what, causes)
    _scale(t, W, var, causes, what, 1.8)


@CHAPTER.exercise("xavier_uniform_", points=2)
def check_xavier_uniform_(t, fn):
    with t.case("worked example: W of shape (fan_out, fan_in) = (300, 100), gain 1", weight=2):
        _xavier_uniform_case(t, fn, (300, 100), 1.0, torch.float32, 0)
    if not t.hidden:
        return
    for i, (shape, gain, dtype) in enumerate((
            ((100, 300), 2.0, torch.float32), ((200, 200), math.sqrt(2), torch.float64),
            ((50, 800), 5 / 3, torch.float32), ((1000, 40), 0.5, torch.float64))):
        with t.case(f"W {shape}, gain {gain:.3g}, {dtype}", weight=2):
            _xavier_uniform_case(t, fn, shape, gain, dtype, 10 + i)
    with t.case("default gain = 1 and generator = None"):
        _xavier_uniform_case(t, fn, (120, 250), 1.0, torch.float32, 0, pass_gain=False)
    _reproducible(t, fn, lambda: _blank(20, 30), lambda s: (1.0, gen(s)),
                  "xavier_uniform_(W, 1.0, generator=g)")
    _parameter_case(t, fn, (1.0, gen(3)), "xavier_uniform_(W, 1.0, generator=g)")


# --- xavier_normal_ ------------------------------------------------------------------------


def _xavier_normal_case(t, fn, shape, gain, dtype, seed, pass_gain=True):
    fan_out, fan_in = shape
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    args = (gain, gen(seed)) if pass_gain else ()
    what = (f"xavier_normal_(W {tuple(shape)} {str(dtype).replace('torch.', '')}"
            + (f", gain={gain:g}, generator=g)" if pass_gain else ")"))
    W = _blank(*shape, dtype=dtype)
    _init_call(t, fn, W, args, what)
    s2 = 2.0 / (fan_in + fan_out)
    causes = {
        "the gain is missing (std = sqrt(2 / (fan_in + fan_out)), not multiplied by gain)": s2,
        "fan_in only: std = gain * sqrt(1 / fan_in) uses fan_in instead of "
        "(fan_in + fan_out) / 2": gain ** 2 / fan_in,
        "fan_in only: std = gain * sqrt(2 / fan_in) uses fan_in instead of fan_in + fan_out":
            2 * gain ** 2 / fan_in,
        "the variance is used as the standard deviation (a square root is missing): "
        "torch.normal takes the std": (gain * s2) ** 2,
        "the gain is applied twice (or squared)": gain ** 4 * s2,
    }
    w, n, m2, _ = _moments(W)
    _normal_shape(w, n, m2, what)
    _scale(t, W, std * std, causes, what, 3.0)


@CHAPTER.exercise("xavier_normal_", points=1)
def check_xavier_normal_(t, fn):
    with t.case("worked example: W of shape (fan_out, fan_in) = (300, 100), gain 1", weight=2):
        _xavier_normal_case(t, fn, (300, 100), 1.0, torch.float32, 0)
    if not t.hidden:
        return
    for i, (shape, gain, dtype) in enumerate((
            ((100, 300), 2.0, torch.float64), ((200, 200), math.sqrt(2), torch.float32),
            ((40, 1000), 0.5, torch.float32))):
        with t.case(f"W {shape}, gain {gain:.3g}, {dtype}", weight=2):
            _xavier_normal_case(t, fn, shape, gain, dtype, 20 + i)
    with t.case("default gain = 1 and generator = None"):
        _xavier_normal_case(t, fn, (120, 250), 1.0, torch.float32, 0, pass_gain=False)
    _reproducible(t, fn, lambda: _blank(20, 30), lambda s: (1.0, gen(s)),
                  "xavier_normal_(W, 1.0, generator=g)")
    _parameter_case(t, fn, (1.0, gen(3)), "xavier_normal_(W, 1.0, generator=g)")


# --- kaiming_normal_ -----------------------------------------------------------------------


def _kaiming_case(t, fn, shape, dtype, seed, pass_gen=True):
    fan_out, fan_in = shape
    var = 2.0 / fan_in
    what = f"kaiming_normal_(W {tuple(shape)} {str(dtype).replace('torch.', '')}" + (
        ", generator=g)" if pass_gen else ")")
    W = _blank(*shape, dtype=dtype)
    _init_call(t, fn, W, (gen(seed),) if pass_gen else (), what)
    causes = {
        "fan_in is W.shape[1] for W of shape (fan_out, fan_in) (nn.Linear's convention); "
        "W.shape[0] is fan_out": 2.0 / fan_out,
        "the ReLU gain is missing: the variance is 2 / fan_in, not 1 / fan_in": 1.0 / fan_in,
        "the variance 2 / fan_in is used as the standard deviation (a square root is "
        "missing): torch.normal takes the std": (2.0 / fan_in) ** 2,
        "Xavier's variance 2 / (fan_in + fan_out) instead of He's 2 / fan_in":
            2.0 / (fan_in + fan_out),
        "the gain sqrt(2) is applied twice: the variance is 2 / fan_in": 4.0 / fan_in,
    }
    w, n, m2, _ = _moments(W)
    _normal_shape(w, n, m2, what)
    _scale(t, W, var, causes, what, 3.0)


@CHAPTER.exercise("kaiming_normal_", points=1)
def check_kaiming_normal_(t, fn):
    with t.case("worked example: W of shape (fan_out, fan_in) = (300, 100)", weight=2):
        _kaiming_case(t, fn, (300, 100), torch.float32, 0)
    if not t.hidden:
        return
    for i, (shape, dtype) in enumerate((((100, 400), torch.float64), ((256, 256), torch.float32),
                                        ((1000, 30), torch.float32))):
        with t.case(f"W {shape}, {dtype}", weight=2):
            _kaiming_case(t, fn, shape, dtype, 30 + i)
    with t.case("generator = None by default"):
        _kaiming_case(t, fn, (200, 150), torch.float32, 0, pass_gen=False)
    _reproducible(t, fn, lambda: _blank(20, 30), lambda s: (gen(s),),
                  "kaiming_normal_(W, generator=g)")
    _parameter_case(t, fn, (gen(3),), "kaiming_normal_(W, generator=g)")


# --- init_weights --------------------------------------------------------------------------


def _net_for_init(seed, bias=True):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(200, 300, bias=bias), nn.ReLU(), nn.BatchNorm1d(300),
                        nn.Linear(300, 100, bias=bias), nn.Tanh(), nn.Conv2d(3, 8, 3),
                        nn.Linear(100, 10, bias=bias))
    with torch.no_grad():  # non-default values, so "untouched" is visible
        net[2].weight.normal_(1.0, 0.1)
        net[2].bias.normal_(0.0, 0.1)
        for lin in (net[0], net[3], net[6]):
            if lin.bias is not None:
                lin.bias.fill_(0.25)
    return net


def _init_weights_case(t, init_weights_, bias, seed):
    net = _net_for_init(seed, bias)
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    what = "net.apply(init_weights)"
    if not callable(init_weights_):
        raise Mismatch(f"init_weights should be a function, but is {fmt_value(init_weights_)}")
    t.call(lambda: net.apply(init_weights_), what=what, forbidden_python=NO_NN_INIT)
    after = net.state_dict()
    for k, v in before.items():
        if not k.startswith(("0.", "3.", "6.")) and not torch.equal(after[k], v):
            kind = type(net[int(k.split('.')[0])]).__name__
            raise Mismatch(f"{what} changed `{k}` of the {kind} layer; only nn.Linear layers "
                           "should change\n  likely cause: the isinstance(m, nn.Linear) test "
                           "is missing or too broad (other modules are untouched)")
    for i in (0, 3, 6):
        lin = net[i]
        W = lin.weight.detach()
        if torch.equal(W, before[f"{i}.weight"]):
            raise Mismatch(f"{what} did not change the weight of net[{i}] (nn.Linear)\n"
                           "  likely cause: the weights are filled into a copy, or the test for "
                           "nn.Linear never matches")
        if lin.bias is not None and not torch.equal(lin.bias.detach(), torch.zeros_like(lin.bias)):
            raise Mismatch(f"{what}: the bias of net[{i}] is {fmt_value(lin.bias)}, expected "
                           "zeros\n  likely cause: the bias is not zeroed (m.bias.data.fill_(0) "
                           "or nn.init-free zero_())")
        if W.flatten().unique().numel() == 1:
            raise Mismatch(f"{what}: every weight of net[{i}] is {fmt_number(W.flatten()[0].item())}"
                           "\n  likely cause: a constant initialisation; then every hidden unit "
                           "computes the same function and gets the same gradient (symmetry is "
                           "never broken)")
        fan_out, fan_in = W.shape
        a = math.sqrt(6.0 / (fan_in + fan_out))
        causes = {"xavier_normal_ instead of xavier_uniform_": 2.0 / (fan_in + fan_out),
                  "kaiming (He) scale 2 / fan_in instead of Xavier's": 2.0 / fan_in}
        w, n, m2, _ = _moments(W)
        _uniform_shape(w, n, m2, a, f"the weight of net[{i}] {tuple(W.shape)}", causes)
        _scale(t, W, a * a / 3, causes, f"the weight of net[{i}]", 1.8)


@CHAPTER.exercise("init_weights", points=1)
def check_init_weights(t, init_weights_):
    with t.case("net.apply(init_weights) on Linear, ReLU, BatchNorm1d, Tanh, Conv2d layers",
                weight=2):
        _init_weights_case(t, init_weights_, True, 0)
    if not t.hidden:
        return
    with t.case("Linear layers without a bias (m.bias is None)"):
        _init_weights_case(t, init_weights_, False, 1)
    with t.case("a called directly on one nn.Linear(64, 32) and on an nn.ReLU()"):
        lin = nn.Linear(64, 32)
        t.call(init_weights_, lin, what="init_weights(nn.Linear(64, 32))",
               forbidden_python=NO_NN_INIT)
        t.call(init_weights_, nn.ReLU(), what="init_weights(nn.ReLU())")
        if not torch.equal(lin.bias.detach(), torch.zeros(32)):
            raise Mismatch("init_weights(nn.Linear(64, 32)) did not zero the bias\n"
                           "  likely cause: the bias is not zeroed")
        if lin.weight.detach().abs().max() > math.sqrt(6 / 96) * (1 + 1e-5):
            raise Mismatch("init_weights(nn.Linear(64, 32)): weights beyond the Xavier bound "
                           "sqrt(6 / (64 + 32))")


# --- layer_gradient_norms ------------------------------------------------------------------


def _reference_norms(net, X, y, loss):
    clone = _clone(net)
    return layer_gradient_norms(clone, X, y, loss), clone


def _clone(net):
    import copy

    c = copy.deepcopy(net)
    for p in c.parameters():
        p.grad = None
    return c


def _as_floats(out, what, count):
    if isinstance(out, torch.Tensor) and out.dim() == 1:
        raise Mismatch(f"{what} should return a list of floats, but returned a tensor "
                       f"{fmt_value(out)}\n  likely cause: return [norm.item() for ...]")
    if not isinstance(out, list | tuple):
        raise Mismatch(f"{what} should return a list of floats, one per nn.Linear, but returned "
                       f"{fmt_value(out)}")
    vals = []
    for v in out:
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if not isinstance(v, int | float) or isinstance(v, bool):
            raise Mismatch(f"{what}: every item should be a float (the norm of one weight "
                           f"gradient), but one is {fmt_value(v)}\n  likely cause: "
                           + ("a gradient tensor instead of its norm" if isinstance(v, torch.Tensor)
                              else "not a number"))
        vals.append(float(v))
    if len(vals) != count:
        raise Mismatch(f"{what} returned {len(vals)} norms, expected {count} (one per nn.Linear "
                       "in the net, its weight only)\n  likely cause: "
                       + ("bias gradients are included too" if len(vals) == 2 * count else
                          "only the top-level layers were visited: use net.modules(), which "
                          "also visits nested blocks" if len(vals) < count else
                          "norms of modules other than nn.Linear"))
    return vals


def _norm_case(t, fn, net, X, y, loss, label, stale=False):
    ref, ref_net = _reference_norms(net, X, y, loss)
    lin = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if stale:  # garbage left over from an earlier backward pass
        for i, p in enumerate(net.parameters()):
            p.grad = torch.full_like(p, 3.0 + i)
    before = [p.detach().clone() for p in net.parameters()]
    what = f"layer_gradient_norms(net, X, y, loss) for {label}"
    out = t.call(fn, net, X, y, loss, what=what, forbidden_python=NO_NN_INIT)
    vals = _as_floats(out, what, len(ref))
    for p, b in zip(net.parameters(), before):
        if not torch.equal(p.detach(), b):
            raise Mismatch(f"{what} changed the parameters of net; it should only compute "
                           "gradients\n  likely cause: an optimiser step or an update inside "
                           "the function (parameter values must be unchanged)")
    exp = torch.tensor(ref, dtype=torch.float64)
    got = torch.tensor(vals, dtype=torch.float64)
    if torch.allclose(got, exp, rtol=1e-4, atol=1e-7):
        return
    causes = {
        "weight norms instead of gradient norms: take m.weight.grad.norm(), not m.weight.norm()":
            [m.weight.detach().norm().item() for m in lin],
        "the loss is summed instead of averaged: backward of loss(net(X), y).mean()":
            [r * len(X) for r in ref] if loss_reduction_none(loss) else None,
        "squared norms (the Frobenius norm is the square root of the sum of squares)":
            [r ** 2 for r in ref],
        "gradient norms in reverse order (the order of the forward pass is asked)": ref[::-1],
        "twice the expected norms: gradients of an earlier backward pass accumulated in .grad; "
        "zero the gradients (net.zero_grad()) before backward": [2 * r for r in ref],
    }
    if stale:
        causes["stale accumulated gradients: PyTorch adds the .grad of every backward pass to "
               "what is there, so zero the gradients (net.zero_grad()) before backward"] = \
            _stale_norms(ref_net, net)
    cause = next((c for c, v in causes.items() if v is not None and None not in v
                  and torch.allclose(got, torch.tensor(v, dtype=torch.float64), rtol=1e-4,
                                     atol=1e-7)), None)
    raise Mismatch(f"{what} returned wrong norms.\n  input X: {fmt_value(X)}\n"
                   f"  expected: {[round(r, 6) for r in ref]}\n"
                   f"  received: {[round(v, 6) for v in vals]}"
                   + (f"\n  likely cause: {cause}" if cause else ""))


def _stale_norms(ref_net, net):
    """Norms of weight gradients with the garbage pre-filled in `_norm_case` added."""
    garbage = {id(p): 3.0 + i for i, p in enumerate(net.parameters())}
    out = []
    for m, m_ref in zip([m for m in net.modules() if isinstance(m, nn.Linear)],
                        [m for m in ref_net.modules() if isinstance(m, nn.Linear)]):
        out.append((m_ref.weight.grad + garbage[id(m.weight)]).norm().item())
    return out


def loss_reduction_none(loss):
    return getattr(loss, "reduction", "none") == "none"


def _mlp(sizes, act, seed, dtype=torch.float32):
    torch.manual_seed(seed)
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers).to(dtype)


@CHAPTER.exercise("layer_gradient_norms", points=2)
def check_layer_gradient_norms(t, fn):
    ce = nn.CrossEntropyLoss(reduction="none")
    X, y = randn(8, 4, seed=0, dtype=torch.float32), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    with t.case("worked example: Linear(4, 5), Sigmoid, Linear(5, 3); cross-entropy"):
        _norm_case(t, fn, _mlp([4, 5, 3], nn.Sigmoid, 0), X, y, ce, "a 4-5-3 sigmoid MLP")
    with t.case("called twice on the same net: gradients of earlier calls must not leak in"):
        net = _mlp([4, 5, 3], nn.Sigmoid, 1)
        t.call(fn, net, X, y, ce, what="layer_gradient_norms (first call)")
        _norm_case(t, fn, net, X, y, ce, "the second call on the same net")
    if not t.hidden:
        return
    with t.case("stale gradients left in .grad by an earlier backward pass", weight=2):
        _norm_case(t, fn, _mlp([6, 7, 7, 2], nn.ReLU, 2), randn(16, 6, seed=2, dtype=torch.float32),
                   torch.randint(0, 2, (16,), generator=gen(2)), ce, "a 6-7-7-2 ReLU MLP",
                   stale=True)
    with t.case("a deep sigmoid net (10 layers), float64: norms fall towards the input"):
        net = _mlp([20] * 10 + [5], nn.Sigmoid, 3, torch.float64)
        _norm_case(t, fn, net, randn(32, 20, seed=3), torch.randint(0, 5, (32,),
                                                                    generator=gen(3)),
                   ce, "a 10-layer sigmoid MLP")
    with t.case("mean squared error with reduction='none', regression targets"):
        net = _mlp([3, 8, 1], nn.Tanh, 4)
        _norm_case(t, fn, net, randn(10, 3, seed=4, dtype=torch.float32),
                   randn(10, 1, seed=5, dtype=torch.float32), nn.MSELoss(reduction="none"),
                   "a 3-8-1 tanh MLP and MSELoss(reduction='none')")
    with t.case("a loss that already averages (reduction='mean')"):
        net = _mlp([5, 6, 3], nn.ReLU, 6)
        _norm_case(t, fn, net, randn(12, 5, seed=6, dtype=torch.float32),
                   torch.randint(0, 3, (12,), generator=gen(6)), nn.CrossEntropyLoss(),
                   "a 5-6-3 ReLU MLP and CrossEntropyLoss()")
    with t.case("nested blocks: Sequential(Sequential(Linear, ReLU), Linear)"):
        torch.manual_seed(7)
        net = nn.Sequential(nn.Sequential(nn.Linear(4, 6), nn.ReLU()), nn.Linear(6, 3))
        _norm_case(t, fn, net, X, y, ce, "a nested Sequential", stale=True)
