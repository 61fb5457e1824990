"""06_initialization: the visible checks (worked examples) of each exercise, and the judging
helpers the hidden checks share.

Public: this module ships to students. Reference values come from `t.ref`, and what likely
mistakes produce from `t.likely`; the references and the hidden checks are the instructor's
(`grader.chapters.initialization`).

Weights follow the `nn.Linear` convention, shape `(fan_out, fan_in)`. The initialisers are
random, so their checks are statistical (variance, bounds, the shape of the distribution) with
the false-alarm probability stated by `grader.cases.expect_stat`; a few further cases check the
contract exactly: in place, returns `W`, reproducible from `generator`, no `torch.nn.init`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from grader.cases import FALSE_ALARM, Z, expect_stat, gen, randn
from grader.feedback import Mismatch, expect_pair, expect_tensor, fmt_number, fmt_value
from grader.registry import Chapter
from grader.remote import Handle

CHAPTER = Chapter("06_initialization", "Numerical stability and initialisation")

NO_NN_INIT = [("torch.nn.init", None, "torch.nn.init")]  # any function of torch.nn.init


def blank(*shape, dtype=torch.float32):
    """A weight to initialise, filled with a value no initialiser draws twice."""
    return torch.full(shape, 123.0, dtype=dtype)


def _moments(W):
    w = W.detach().double().flatten()
    n = w.numel()
    m2 = (w ** 2).mean().item()
    m4 = (w ** 4).mean().item()
    return w, n, m2, m4


def _callable(t, fn):
    if not (isinstance(fn, Handle) and fn.is_callable):
        raise Mismatch(f"{t.name} should be a function, but is {fmt_value(fn)}")


def init_call(t, fn, W, args, what):
    """Call an initialiser on W; check it fills W in place and returns it."""
    _callable(t, fn)
    before = W.detach().clone()
    wrapped = t.build("initialization.returning", fn)  # tells whether W itself came back
    answer = t.call(wrapped, W, *args, what=what, may_modify=True, forbidden_python=NO_NN_INIT)
    returned_W, out = answer if isinstance(answer, tuple) and len(answer) == 2 else (False, None)
    if not returned_W:
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


def _matching(causes: dict, m2: float, n: int, kurt: float, expected_var: float, se: float):
    """The first cause whose variance explains the measured E[w^2]."""
    return next((c for c, v in causes.items()
                 if v is not None and abs(m2 - v) <= Z * math.sqrt((kurt - 1) * v ** 2 / n)
                 and abs(v - expected_var) > 2 * Z * se), "")


def scale(W, expected_var, causes: dict, what, kurt_expected):
    """The variance of W against `expected_var`; a miss names the matching buggy variance."""
    w, n, m2, m4 = _moments(W)
    var_w2 = (kurt_expected - 1) * expected_var ** 2  # Var(w^2) of the expected distribution
    se = math.sqrt(var_w2 / n)
    if abs(m2 - expected_var) > Z * se:
        cause = _matching(causes, m2, n, kurt_expected, expected_var, se)
        expect_stat(m2, expected_var, se, f"the variance E[w^2] of {what}", cause)
    expect_stat(w.mean().item(), 0.0, math.sqrt(expected_var / n), f"the mean of {what}",
                "the distribution should be centred at 0")
    return w, n, m2, m4


def uniform_shape(W, a, what, causes_var):
    """Bounds of U(-a, a): nothing beyond a, and the extremes close to a."""
    w, n, m2, _ = _moments(W)
    top = w.abs().max().item()
    kurt = (w ** 4).mean().item() / m2 ** 2
    if top > a * (1 + 1e-5):
        normal = abs(kurt - 3) < Z * math.sqrt(24 / n)
        raise Mismatch(
            f"{what}: the largest |w| is {fmt_number(top)}, beyond the bound a = {fmt_number(a)} "
            f"of U(-a, a); the kurtosis E[w^4]/E[w^2]^2 is {kurt:.2f} (a uniform's is 1.8, a "
            "normal's 3)\n  likely cause: "
            + ("drawn from a normal distribution instead of uniform" if normal else
               next((c for c, v in causes_var.items() if v is not None and abs(m2 - v) < 0.05 * v),
                    "the bound a is too large")))
    eps = -math.log(FALSE_ALARM) / n  # P(max |w| < a (1 - eps)) = (1 - eps)^n <= FALSE_ALARM
    if top < a * (1 - eps):
        cause = next((c for c, v in causes_var.items() if v is not None and abs(m2 - v) < 0.05 * v),
                     "the bound a is too small")
        raise Mismatch(
            f"{what}: the largest |w| is {fmt_number(top)}, but with {n} draws from U(-a, a) "
            f"it exceeds a (1 - {eps:.1e}) = {fmt_number(a * (1 - eps))} except with "
            f"probability {FALSE_ALARM:.1e}\n  likely cause: {cause}")
    # kurtosis of U(-a, a) is 1.8; its standard error is sqrt(1.317 / n) (delta method)
    expect_stat(kurt, 1.8, math.sqrt(1.317 / n), f"the kurtosis E[w^4]/E[w^2]^2 of {what}",
                "not a uniform distribution")


def normal_shape(W, what):
    w, n, m2, _ = _moments(W)
    kurt = (w ** 4).mean().item() / m2 ** 2
    expect_stat(kurt, 3.0, math.sqrt(24 / n), f"the kurtosis E[w^4]/E[w^2]^2 of {what}",
                "uniform instead of normal (a uniform's kurtosis is 1.8, a normal's 3): use "
                "W.normal_(0, std) or torch.randn")


def reproducible(t, fn, make_W, args, what):
    with t.case("all randomness comes from `generator`"):
        t.build("seed_global", 1)
        a = init_call(t, fn, make_W(), args(7), what).detach().clone()
        t.build("seed_global", 2)
        b = init_call(t, fn, make_W(), args(7), what).detach().clone()
        c = init_call(t, fn, make_W(), args(8), what).detach().clone()
        if not torch.equal(a, b):
            raise Mismatch(f"{what}: two calls with generators of the same seed gave different "
                           "values\n  likely cause: a random function called without "
                           "`generator=generator`, so it uses the global random state")
        if torch.equal(a, c):
            raise Mismatch(f"{what}: generators of different seeds gave the same values\n"
                           "  likely cause: the generator is not used, or re-seeded inside")


def parameter_case(t, fn, args, what):
    with t.case("W is an nn.Parameter (requires grad), as in nn.Linear"):
        W = nn.Parameter(blank(40, 30))
        init_call(t, fn, W, args, what)
        if not isinstance(W, nn.Parameter) or not W.requires_grad or W.grad_fn is not None:
            raise Mismatch(f"{what}: W should stay a leaf parameter that requires grad\n"
                           "  likely cause: the fill was recorded by autograd; do it inside "
                           "`with torch.no_grad():`")


def _dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


# --- xavier_uniform_ -----------------------------------------------------------------------


def xavier_uniform_case(t, fn, shape, gain, dtype, seed, pass_gain=True):
    law = t.ref("_xavier_uniform_law", tuple(shape), gain)
    causes = t.likely("_xavier_uniform_law", tuple(shape), gain)
    args = (gain, gen(seed)) if pass_gain else ()
    what = (f"xavier_uniform_(W {tuple(shape)} {_dtype_name(dtype)}"
            + (f", gain={gain:g}, generator=g)" if pass_gain else ")"))
    W = blank(*shape, dtype=dtype)
    init_call(t, fn, W, args, what)
    uniform_shape(W, law["bound"], what, causes)
    scale(W, law["var"], causes, what, 1.8)


@CHAPTER.visible("xavier_uniform_", points=2)
def visible_xavier_uniform_(t, fn):
    with t.case("worked example: W of shape (fan_out, fan_in) = (300, 100), gain 1", weight=2):
        xavier_uniform_case(t, fn, (300, 100), 1.0, torch.float32, 0)


# --- xavier_normal_ ------------------------------------------------------------------------


def xavier_normal_case(t, fn, shape, gain, dtype, seed, pass_gain=True):
    law = t.ref("_xavier_normal_law", tuple(shape), gain)
    causes = t.likely("_xavier_normal_law", tuple(shape), gain)
    args = (gain, gen(seed)) if pass_gain else ()
    what = (f"xavier_normal_(W {tuple(shape)} {_dtype_name(dtype)}"
            + (f", gain={gain:g}, generator=g)" if pass_gain else ")"))
    W = blank(*shape, dtype=dtype)
    init_call(t, fn, W, args, what)
    normal_shape(W, what)
    scale(W, law["var"], causes, what, 3.0)


@CHAPTER.visible("xavier_normal_", points=1)
def visible_xavier_normal_(t, fn):
    with t.case("worked example: W of shape (fan_out, fan_in) = (300, 100), gain 1", weight=2):
        xavier_normal_case(t, fn, (300, 100), 1.0, torch.float32, 0)


# --- kaiming_normal_ -----------------------------------------------------------------------


def kaiming_case(t, fn, shape, dtype, seed, pass_gen=True):
    law = t.ref("_kaiming_normal_law", tuple(shape))
    causes = t.likely("_kaiming_normal_law", tuple(shape))
    what = f"kaiming_normal_(W {tuple(shape)} {_dtype_name(dtype)}" + (
        ", generator=g)" if pass_gen else ")")
    W = blank(*shape, dtype=dtype)
    init_call(t, fn, W, (gen(seed),) if pass_gen else (), what)
    normal_shape(W, what)
    scale(W, law["var"], causes, what, 3.0)


@CHAPTER.visible("kaiming_normal_", points=1)
def visible_kaiming_normal_(t, fn):
    with t.case("worked example: W of shape (fan_out, fan_in) = (300, 100)", weight=2):
        kaiming_case(t, fn, (300, 100), torch.float32, 0)


# --- init_weights --------------------------------------------------------------------------

# the nn.Linear layers of the net `initialization.init_net` builds: index -> weight shape
INIT_NET_LINEARS = {0: (300, 200), 3: (100, 300), 6: (10, 100)}


def init_weights_case(t, init_weights_, bias, seed):
    laws = {i: (t.ref("_init_weights_law", shape), t.likely("_init_weights_law", shape))
            for i, shape in INIT_NET_LINEARS.items()}
    what = "net.apply(init_weights)"
    _callable(t, init_weights_)
    net = t.build("initialization.init_net", bias, gen(seed))
    before = net.method("state_dict")
    t.call(net.apply, init_weights_, what=what, forbidden_python=NO_NN_INIT)
    after = net.method("state_dict")
    kinds = {0: "Linear", 1: "ReLU", 2: "BatchNorm1d", 3: "Linear", 4: "Tanh", 5: "Conv2d",
             6: "Linear"}
    for k, v in before.items():
        if int(k.split(".")[0]) not in INIT_NET_LINEARS and not torch.equal(after[k], v):
            raise Mismatch(f"{what} changed `{k}` of the {kinds[int(k.split('.')[0])]} layer; "
                           "only nn.Linear layers should change\n  likely cause: the "
                           "isinstance(m, nn.Linear) test is missing or too broad (other modules "
                           "are untouched)")
    for i, (law, causes) in laws.items():
        W = after[f"{i}.weight"]
        if torch.equal(W, before[f"{i}.weight"]):
            raise Mismatch(f"{what} did not change the weight of net[{i}] (nn.Linear)\n"
                           "  likely cause: the weights are filled into a copy, or the test for "
                           "nn.Linear never matches")
        b = after.get(f"{i}.bias")
        if b is not None and not torch.equal(b, torch.zeros_like(b)):
            raise Mismatch(f"{what}: the bias of net[{i}] is {fmt_value(b)}, expected "
                           "zeros\n  likely cause: the bias is not zeroed (m.bias.data.fill_(0) "
                           "or nn.init-free zero_())")
        if W.flatten().unique().numel() == 1:
            raise Mismatch(f"{what}: every weight of net[{i}] is {fmt_number(W.flatten()[0].item())}"
                           "\n  likely cause: a constant initialisation; then every hidden unit "
                           "computes the same function and gets the same gradient (symmetry is "
                           "never broken)")
        uniform_shape(W, law["bound"], f"the weight of net[{i}] {tuple(W.shape)}", causes)
        scale(W, law["var"], causes, f"the weight of net[{i}]", 1.8)


@CHAPTER.visible("init_weights", points=1)
def visible_init_weights(t, init_weights_):
    with t.case("net.apply(init_weights) on Linear, ReLU, BatchNorm1d, Tanh, Conv2d layers",
                weight=2):
        init_weights_case(t, init_weights_, True, 0)


# --- layer_gradient_norms ------------------------------------------------------------------


def mlp_params(sizes, seed, dtype=torch.float32):
    """[(W, b), ...] of the Linear layers of an MLP of `sizes` (about nn.Linear's scale)."""
    out = []
    for k in range(len(sizes) - 1):
        fan_in, fan_out = sizes[k], sizes[k + 1]
        s = 1 / math.sqrt(3 * fan_in)
        out.append(((randn(fan_out, fan_in, seed=seed + 2 * k) * s).to(dtype),
                    (randn(fan_out, seed=seed + 2 * k + 1) * s).to(dtype)))
    return out


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


def norm_case(t, fn, sizes, activation, seed, X, y, loss_name, label, *, loss_kwargs=None,
              dtype=torch.float32, nested=False, stale=False, twice=False):
    """layer_gradient_norms on an MLP made in the kernel, against the reference's norms."""
    loss_kwargs = dict(loss_kwargs or {})
    params = mlp_params(sizes, seed, dtype)
    spec = (list(sizes), activation, params, dtype, nested, X, y, loss_name, loss_kwargs, stale)
    ref, causes = t.ref("_gradient_norms", *spec), t.likely("_gradient_norms", *spec)
    net = t.build("initialization.mlp", list(sizes), activation, params, dtype, nested)
    loss = t.build("loss", loss_name, **loss_kwargs)
    if twice:
        t.call(fn, net, X, y, loss, what="layer_gradient_norms (first call)")
    if stale:  # garbage left over from an earlier backward pass
        t.build("initialization.fill_grads", net, 3.0)
    what = f"layer_gradient_norms(net, X, y, loss) for {label}"
    out = t.call(fn, net, X, y, loss, what=what, forbidden_python=NO_NN_INIT)
    vals = _as_floats(out, what, len(ref))
    after = list(net.method("state_dict").values())
    given = [p for W, b in params for p in (W, b)]
    if len(after) != len(given) or any(not torch.equal(a, g) for a, g in zip(after, given)):
        raise Mismatch(f"{what} changed the parameters of net; it should only compute "
                       "gradients\n  likely cause: an optimiser step or an update inside "
                       "the function (parameter values must be unchanged)")
    got = torch.tensor(vals, dtype=torch.float64)
    if torch.allclose(got, torch.tensor(ref, dtype=torch.float64), rtol=1e-4, atol=1e-7):
        return
    cause = next((c for c, v in causes.items() if isinstance(v, list | tuple) and len(v) == len(vals)
                  and torch.allclose(got, torch.tensor(v, dtype=torch.float64), rtol=1e-4,
                                     atol=1e-7)), None)
    raise Mismatch(f"{what} returned wrong norms.\n  input X: {fmt_value(X)}\n"
                   f"  expected: {[round(r, 6) for r in ref]}\n"
                   f"  received: {[round(v, 6) for v in vals]}"
                   + (f"\n  likely cause: {cause}" if cause else ""))


CE = ("CrossEntropyLoss", {"reduction": "none"})


@CHAPTER.visible("layer_gradient_norms", points=2)
def visible_layer_gradient_norms(t, fn):
    X, y = randn(8, 4, seed=0, dtype=torch.float32), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    with t.case("worked example: Linear(4, 5), Sigmoid, Linear(5, 3); cross-entropy"):
        norm_case(t, fn, [4, 5, 3], "Sigmoid", 0, X, y, CE[0], "a 4-5-3 sigmoid MLP",
                  loss_kwargs=CE[1])
    with t.case("called twice on the same net: gradients of earlier calls must not leak in"):
        norm_case(t, fn, [4, 5, 3], "Sigmoid", 10, X, y, CE[0],
                  "the second call on the same net", loss_kwargs=CE[1], twice=True)


# --- softmax_regression_grad (D2L 5.4, exercise 2) ---------------------------------------------

NO_AUTOGRAD = {torch.Tensor.backward: "Tensor.backward", torch.autograd.grad: "torch.autograd.grad",
               torch.autograd.backward: "torch.autograd.backward"}


def softmax_grad_tol(dtype):
    return dict(atol=1e-5, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-9)


def softmax_grad_case(t, fn, X, y, W, b):
    """softmax_regression_grad(X, y, W, b) against the reference gradients (float64, cast to
    X's dtype); a miss names the mistake whose gradient matches."""
    dW_ref, db_ref = t.ref("softmax_regression_grad", X, y, W, b)
    likely_W = t.likely("softmax_regression_grad_W", X, y, W, b)
    likely_b = t.likely("softmax_regression_grad_b", X, y, W, b)
    (n, d), q = tuple(X.shape), W.shape[0]
    what = f"softmax_regression_grad(X {(n, d)}, y {(n,)}, W {(q, d)}, b {(q,)})"
    out = t.call(fn, X, y, W, b, what=what, forbidden=NO_AUTOGRAD)
    dW, db = expect_pair(out, what, "dW", "db")
    tol = softmax_grad_tol(X.dtype)
    inputs = {"X": X, "y": y, "W": W, "b": b}
    if isinstance(dW, torch.Tensor) and tuple(dW.shape) == (d, q) and d != q:
        raise Mismatch(f"dW of {what} has shape {(d, q)}, expected W's shape {(q, d)}\n"
                       "  likely cause: a gradient has the shape of its parameter: with W of "
                       "shape (q, d) (nn.Linear's layout, one row per class), dW = (P - Y).T @ X "
                       "/ n, not X.T @ (P - Y) / n")
    expect_tensor(dW, dW_ref, what=f"dW of {what}", inputs=inputs, likely=likely_W, **tol)
    expect_tensor(db, db_ref, what=f"db of {what}", inputs=inputs, likely=likely_b, **tol)


@CHAPTER.visible("softmax_regression_grad", points=1)
def visible_softmax_regression_grad(t, fn):
    X = torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 1.0], [2.0, 0.5, -1.0], [-1.0, 0.0, 0.5]])
    y = torch.tensor([0, 2, 1, 2])
    W = torch.tensor([[0.2, -0.1, 0.4], [0.0, 0.3, -0.2], [-0.3, 0.1, 0.1]])
    b = torch.tensor([0.1, 0.0, -0.1])
    with t.case("worked example: 4 examples, 3 features, 3 classes"):
        softmax_grad_case(t, fn, X, y, W, b)
    with t.case("a constant start: every weight 0.5, bias 0 (the rows of dW still differ)"):
        softmax_grad_case(t, fn, X, y, torch.full((3, 3), 0.5), torch.zeros(3))
