"""01_linear_regression: the visible checks (worked examples) of each exercise.

Public: this module ships to students. Reference values come from `t.ref`, and what likely
mistakes produce from `t.likely`; the references and the hidden checks are the instructor's
(`grader.chapters.linear_regression`). The helpers here judge a student's output (shapes,
dtypes, statistics of random data, messages); none of them computes an expected value.
"""

from __future__ import annotations

import math

import torch

from grader.cases import expect_stat, gen, randn, tol
from grader.feedback import Mismatch, expect_close, expect_pair, expect_tensor, fmt_number
from grader.registry import Chapter
from grader.remote import Handle, StudentError

CHAPTER = Chapter("01_linear_regression", "Linear regression and maximum likelihood")

# --- shared pieces of the checks ---------------------------------------------------------

NO_ITERATION = {torch.Tensor.backward: "Tensor.backward", torch.autograd.grad: "torch.autograd.grad",
                torch.autograd.backward: "torch.autograd.backward"}
OPTIM = ("torch.optim", None, "torch.optim")


def _type_of(x) -> str:
    return x.type_name if isinstance(x, Handle) else type(x).__name__


def _flat(out) -> torch.Tensor:
    """Everything a call returned, as one float64 vector (to compare two calls)."""
    if isinstance(out, torch.Tensor):
        return out.detach().double().flatten()
    if isinstance(out, tuple | list):
        parts = [_flat(x) for x in out]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
    if isinstance(out, int | float) and not isinstance(out, bool):
        return torch.tensor([float(out)], dtype=torch.float64)
    raise Mismatch(f"expected tensors, got {_type_of(out)}")


# --- synthetic_data -------------------------------------------------------------------------


def synthetic_stats(t, synthetic_data, w, b, n, noise, seed, label):
    """One call on a generator of `seed`: shapes, dtype and the distribution of X and y."""
    with t.case(f"{label}: shapes, dtype and the distribution of X and y", weight=2):
        out = t.call(synthetic_data, w, b, n, noise, gen(seed),
                     what=f"synthetic_data(w, b, {n}, noise={noise}, generator=g)")
        X, y = expect_pair(out, "synthetic_data", "X", "y")
        d = len(w)
        for name, got, shape in (("X", X, (n, d)), ("y", y, (n, 1))):
            if not isinstance(got, torch.Tensor):
                raise Mismatch(f"{name} should be a torch.Tensor, got {_type_of(got)}")
            if got.dtype != w.dtype:
                raise Mismatch(f"{name} has dtype {got.dtype}, expected {w.dtype} (w's dtype)\n"
                               "  likely cause: torch.normal/randn without dtype=w.dtype")
            if tuple(got.shape) != shape:
                raise Mismatch(f"{name} has shape {tuple(got.shape)}, expected {shape}"
                               + ("\n  likely cause: y not reshaped to (num_examples, 1)"
                                  if name == "y" else ""))
        Xd, yd = X.detach().double(), y.detach().double().reshape(-1)
        N = Xd.numel()
        expect_stat(Xd.mean().item(), 0.0, 1 / math.sqrt(N), "the mean of X")
        expect_stat(Xd.var().item(), 1.0, math.sqrt(2 / N), "the variance of X",
                    "X should be standard normal: torch.randn or torch.normal(0, 1, ...)")
        if d > 1:
            corr = torch.corrcoef(Xd.T)[0, 1].item()
            expect_stat(corr, 0.0, 1 / math.sqrt(n), "the correlation of two columns of X",
                        "the columns of X should be independent")
        # the noise of the data model y = X w + b + noise (the exercise's definition)
        r = yd - Xd @ w.double().reshape(-1) - float(torch.as_tensor(b).reshape(-1)[0])
        if noise == 0:
            if r.abs().max() > 1e-4 * (1 + Xd.abs().max()):
                raise Mismatch("with noise=0, y should equal X @ w + b exactly\n"
                               "  likely cause: the noise is not multiplied by `noise`, or b is "
                               "missing")
            return
        expect_stat(r.mean().item(), 0.0, noise / math.sqrt(n),
                    "the mean of the noise y - (X @ w + b)", "the bias b is missing or wrong")
        expect_stat(r.std().item(), noise, noise / math.sqrt(2 * n),
                    "the standard deviation of the noise y - (X @ w + b)",
                    "the noise should be `noise * N(0, 1)`")
        corr = torch.corrcoef(torch.stack([Xd[:, 0], r]))[0, 1].item()
        expect_stat(corr, 0.0, 1 / math.sqrt(n), "the correlation of X and the noise")


def reproducible(t, fn, make_args, what):
    """Same generator seed -> same result, whatever the kernel's global random state."""
    with t.case("all randomness comes from `generator`"):
        t.build("seed_global", 1)
        first = t.call(fn, *make_args(7), what=what)
        t.build("seed_global", 2)
        second = t.call(fn, *make_args(7), what=what)
        third = t.call(fn, *make_args(8), what=what)
        a, b, c = _flat(first), _flat(second), _flat(third)
        if a.shape != b.shape or not torch.equal(a, b):
            raise Mismatch(f"{what}: two calls with generators of the same seed gave different "
                           "results\n  likely cause: a random function called without "
                           "`generator=generator`, so it uses the global random state")
        if a.shape == c.shape and torch.equal(a, c):
            raise Mismatch(f"{what}: generators of different seeds gave the same result\n"
                           "  likely cause: the generator is not used, or re-seeded inside")


@CHAPTER.visible("synthetic_data", points=2, d2l=("synthetic_data",))
def visible_synthetic_data(t, synthetic_data):
    w32 = torch.tensor([2.0, -3.4])
    synthetic_stats(t, synthetic_data, w32, 4.2, 2000, 0.01, 0, "w = [2, -3.4], b = 4.2")
    reproducible(t, synthetic_data, lambda s: (w32, 4.2, 50, 0.01, gen(s)),
                 "synthetic_data(w, b, 50, generator=g)")


# --- data_iter ------------------------------------------------------------------------------


def batches_of(t, data_iter, batch_size, features, labels, g, what):
    """Call data_iter and iterate over what it returns: remotely, in one go, and under the
    exercise's restrictions (a generator's body runs while it is iterated)."""
    out = t.call(data_iter, batch_size, features, labels, g, what=what)
    if isinstance(out, list | tuple):
        return _check_batches(list(out), what)
    if not isinstance(out, Handle):
        raise Mismatch(f"{what} should yield minibatches (use `yield`), but returned "
                       f"{_type_of(out)}")

    def iterate():
        try:
            return out.to_list(what=f"iterating over {what}")
        except StudentError as exc:
            raised = exc.report.get("raised") or {}
            if raised.get("type") == "TypeError" and "not iterable" in str(raised.get("message")):
                raise Mismatch(f"{what} should yield minibatches (use `yield`), but returned "
                               f"{_type_of(out)}") from None
            raise
    return _check_batches(t.call(iterate, what=what), what)


def _check_batches(batches, what):
    for i, item in enumerate(batches):
        X, y = expect_pair(item, f"minibatch {i} of {what}", "X", "y")
        if not isinstance(X, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise Mismatch(f"minibatch {i} of {what} should be a pair of tensors")
        if X.shape[0] != y.shape[0]:
            raise Mismatch(f"minibatch {i}: X has {X.shape[0]} rows but y has {y.shape[0]}")
    return batches


def one_pass(t, data_iter, n, batch_size, seed, dtype=torch.float32):
    """Run one pass; return the visiting order of example indices."""
    features = torch.stack([torch.arange(n, dtype=dtype), randn(n, seed=seed, dtype=dtype)], 1)
    labels = (10 * torch.arange(n, dtype=dtype)).reshape(-1, 1)
    what = f"data_iter({batch_size}, features, labels, generator=g) over {n} examples"
    batches = batches_of(t, data_iter, batch_size, features, labels, gen(seed), what)
    sizes = [b[0].shape[0] for b in batches]
    expected_sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    if sorted(sizes, reverse=True) != expected_sizes or sizes[:-1] != [batch_size] * (len(sizes) - 1):
        raise Mismatch(f"{what}: batch sizes {sizes[:6]}{' ...' if len(sizes) > 6 else ''}, "
                       f"expected {len(expected_sizes)} batches of {batch_size}"
                       + (f" with a last one of {n % batch_size}" if n % batch_size else "")
                       + "\n  likely cause: the slice end should be min(i + batch_size, n)")
    X = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1].reshape(b[0].shape[0], -1) for b in batches])
    if X.shape[1:] != features.shape[1:]:
        raise Mismatch(f"{what}: minibatch features have shape {tuple(X.shape[1:])} per example, "
                       f"expected {tuple(features.shape[1:])}")
    order = X[:, 0].round().long()
    if sorted(order.tolist()) != list(range(n)):
        missing = sorted(set(range(n)) - set(order.tolist()))
        raise Mismatch(f"{what}: one pass should visit every example exactly once; "
                       f"{len(missing)} examples were never visited and "
                       f"{n - len(set(order.tolist()))} were visited twice"
                       "\n  likely cause: sampling with replacement (randint) instead of a "
                       "permutation of the indices")
    if not torch.equal(y.reshape(-1), labels.reshape(-1)[order]) or not torch.equal(
            X, features[order]):
        raise Mismatch(f"{what}: the labels in a minibatch do not belong to its features\n"
                       "  likely cause: features and labels indexed with different indices")
    return order


@CHAPTER.visible("data_iter", points=2, d2l=("data_iter",))
def visible_data_iter(t, data_iter):
    with t.case("10 examples in batches of 3: every example once, last batch smaller"):
        one_pass(t, data_iter, 10, 3, 0)
    with t.case("the order is random and comes from `generator`"):
        orders = [tuple(one_pass(t, data_iter, 20, 4, s).tolist()) for s in (1, 1, 2)]
        if orders[0] == tuple(range(20)):
            raise Mismatch("data_iter visits the examples in their original order\n"
                           "  likely cause: the indices are not shuffled")
        if orders[0] != orders[1]:
            raise Mismatch("two passes with generators of the same seed gave different orders\n"
                           "  likely cause: shuffling without `generator=generator`")
        if orders[0] == orders[2]:
            raise Mismatch("generators of different seeds gave the same order\n"
                           "  likely cause: the generator is not used")


# --- linreg, squared_loss, huber_loss ----------------------------------------------------------


@CHAPTER.visible("linreg", points=1, d2l=("linreg",))
def visible_linreg(t, linreg):
    X = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, -6.0]])
    w, b = torch.tensor([[1.0], [-1.0]]), torch.tensor([0.5])
    with t.case("worked example: X (3, 2), w (2, 1), b (1,)"):
        t.expect(linreg, dict(X=X, w=w, b=b), t.ref("linreg", X, w, b),
                 likely=t.likely("linreg", X, w, b))


@CHAPTER.visible("squared_loss", points=1, d2l=("squared_loss",))
def visible_squared_loss(t, squared_loss):
    y_hat = torch.tensor([[1.0], [2.5], [-1.0]])
    y = torch.tensor([1.5, 2.5, 1.0])
    with t.case("worked example: y_hat (3, 1), y (3,)"):
        t.expect(squared_loss, dict(y_hat=y_hat, y=y), t.ref("squared_loss", y_hat, y),
                 likely=t.likely("squared_loss", y_hat, y))


@CHAPTER.visible("huber_loss", points=2)
def visible_huber_loss(t, huber_loss):
    y_hat = torch.tensor([[0.5], [3.0], [-2.0], [1.0]])
    y = torch.tensor([0.0, 0.0, 0.0, 0.0])
    with t.case("worked example, default delta = 1: residuals 0.5, 3, -2, 1"):
        t.expect(huber_loss, dict(y_hat=y_hat, y=y), t.ref("huber_loss", y_hat, y),
                 likely=t.likely("huber_loss", y_hat, y))


# --- sgd -------------------------------------------------------------------------------------


def sgd_case(t, sgd, params, grads, lr, batch_size):
    """Steps of `sgd` from `params` (leaf tensors): before step k, each p.grad is grads[k][i].

    The expected parameters after each step, and what likely mistakes leave in them, come from
    the references (`_sgd_steps`), computed from the same inputs.
    """
    expected = t.ref("_sgd_steps", params, grads, lr, batch_size)
    likely = t.likely("_sgd_steps", params, grads, lr, batch_size)
    params = [p.detach().clone().requires_grad_() for p in params]
    tols = tol(params[0].dtype, 10)
    what = f"sgd(params, lr={lr}, batch_size={batch_size})"
    for step, step_grads in enumerate(grads):
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        listed = list(params)
        t.call(sgd, listed, lr, batch_size, what=what, may_modify=True)
        for i, p in enumerate(params):
            if listed[i] is not p:
                raise Mismatch(f"{what} replaced params[{i}] in the list; update each tensor "
                               "in place (p -= ...) so the model sees the new values")
            if p.grad_fn is not None or not p.requires_grad:
                raise Mismatch(f"{what}: params[{i}] is no longer a leaf that requires grad\n"
                               "  likely cause: the update was recorded by autograd; do it "
                               "inside `with torch.no_grad():`")
            got, want = p.detach(), expected[step][i]
            for cause, alt in likely.items():
                if alt is None:
                    continue
                alt = alt[step][i]
                if torch.allclose(got, alt, **tols) and not torch.allclose(alt, want, **tols):
                    raise Mismatch(f"{what}: step {step + 1}, params[{i}] has wrong values\n"
                                   f"  likely cause: {cause}")
            expect_tensor(got, want, what=f"params[{i}] after step {step + 1} of {what}", **tols)
            if p.grad is not None and bool(p.grad.abs().max() > 0):
                raise Mismatch(f"{what}: after the update params[{i}].grad is not zero\n"
                               "  likely cause: the gradients are not reset (p.grad.zero_()), "
                               "so they accumulate over minibatches")


def sgd_inputs(shapes, dtype, seed, batch_size, steps=2):
    """Parameters of the given shapes and, per step, a gradient for each: of the size of the
    gradient of a loss summed over a minibatch (batch_size times that of one example)."""
    params = [randn(*s, seed=seed + i, dtype=dtype) for i, s in enumerate(shapes)]
    grads = [[randn(*s, seed=seed + 100 * (k + 1) + i, dtype=dtype, scale=batch_size)
              for i, s in enumerate(shapes)] for k in range(steps)]
    return params, grads


@CHAPTER.visible("sgd", points=2, d2l=("sgd",))
def visible_sgd(t, sgd):
    params, grads = sgd_inputs([(2, 1), (1,)], torch.float32, 0, 4)
    with t.case("two steps on w (2, 1) and b (1,), lr 0.1, batch_size 4"):
        sgd_case(t, sgd, params, grads, 0.1, 4)


# --- gaussian_nll --------------------------------------------------------------------------


@CHAPTER.visible("gaussian_nll", points=2)
def visible_gaussian_nll(t, gaussian_nll):
    y_hat = torch.tensor([[1.0], [2.0], [0.0]])
    y = torch.tensor([1.5, 1.0, 0.0])
    with t.case("worked example: y_hat (3, 1), y (3,), sigma = 0.5"):
        t.expect(gaussian_nll, dict(y_hat=y_hat, y=y, sigma=0.5),
                 t.ref("gaussian_nll", y_hat, y, 0.5), likely=t.likely("gaussian_nll", y_hat, y, 0.5))


# --- fit_normal_equation ---------------------------------------------------------------------


def _close(got, alt, atol, rtol) -> bool:
    return (isinstance(got, torch.Tensor) and isinstance(alt, torch.Tensor)
            and got.shape == alt.shape
            and torch.allclose(got.detach().double(), alt.double(), atol=atol, rtol=rtol))


def fit_case(t, fit, X, y, atol, rtol):
    what = f"fit_normal_equation(X {tuple(X.shape)}, y {tuple(y.shape)})"
    w_ref, b_ref = t.ref("fit_normal_equation", X, y)
    likely = t.likely("fit_normal_equation", X, y)  # {cause: (w or None, b or None)}
    out = t.call(fit, X, y, what=what, forbidden=NO_ITERATION, forbidden_python=[OPTIM])
    w_hat, b_hat = expect_pair(out, what, "w", "b")
    if isinstance(w_hat, torch.Tensor) and w_hat.dim() >= 1 and w_hat.shape[0] == X.shape[1] + 1:
        raise Mismatch(f"{what}: w has {w_hat.shape[0]} rows for {X.shape[1]} features\n"
                       "  likely cause: w includes the intercept; return its first d entries as w "
                       "and the last as b")
    w_likely, b_likely = {}, {}
    for cause, alt in likely.items():  # the first mistake whose every given part matches
        if type(alt) is tuple and len(alt) == 2 and all(
                part is None or _close(got, part, atol, rtol)
                for got, part in zip((w_hat, b_hat), alt)):
            w_likely = {cause: alt[0]} if alt[0] is not None else {}
            b_likely = {cause: alt[1]} if alt[1] is not None else {}
            break
    expect_tensor(w_hat, w_ref, what=f"w of {what}", likely=w_likely, atol=atol, rtol=rtol,
                  inputs={"X": X, "y": y})
    expect_tensor(b_hat, b_ref, what=f"b of {what}", likely=b_likely, atol=atol, rtol=rtol)


@CHAPTER.visible("fit_normal_equation", points=2)
def visible_fit_normal_equation(t, fit):
    X = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    y = torch.tensor([[1.0], [3.0], [5.0], [7.0]])
    with t.case("worked example: the points (0, 1), (1, 3), (2, 5), (3, 7) lie on y = 2x + 1"):
        fit_case(t, fit, X, y, 1e-4, 1e-4)


# --- max_stable_lr --------------------------------------------------------------------------


def max_lr_case(t, max_stable_lr, X, label):
    with t.case(label):
        ref = t.ref("max_stable_lr", X)
        causes = t.likely("max_stable_lr", X)
        what = f"max_stable_lr(X {tuple(X.shape)})"
        got = t.call(max_stable_lr, X, what=what)
        cause = None
        if isinstance(got, int | float | torch.Tensor) and not isinstance(got, bool):
            g = float(got) if not isinstance(got, torch.Tensor) or got.numel() == 1 else None
            cause = next((c for c, v in causes.items()
                          if g is not None and isinstance(v, int | float)
                          and abs(g - v) <= 1e-3 * abs(v) and abs(v - ref) > 1e-3 * ref), None)
        expect_close(got, ref, what=what, atol=0, rtol=1e-3, inputs={"X": X}, cause=cause)


@CHAPTER.visible("max_stable_lr", points=1)
def visible_max_stable_lr(t, max_stable_lr):
    max_lr_case(t, max_stable_lr, torch.tensor([[0.0], [1.0], [2.0], [3.0]]),
                "worked example: X = [0, 1, 2, 3]")


# --- train_linreg (D2L 3.4 exercise: zero initialisation) ----------------------------------

TRUE_W, TRUE_B = torch.tensor([2.0, -3.4]), 4.2


def train_data(t, seed=0):
    """1000 examples of y = X [2, -3.4] + 4.2 + noise 0.01 (made by the reference
    synthetic_data from a generator of `seed`)."""
    features, labels = t.ref("synthetic_data_seeded", TRUE_W, TRUE_B, 1000, 0.01, seed)
    return features, labels


def _pair_of_tensors(out, what):
    w, b = expect_pair(out, what, "w", "b")
    for name, v in (("w", w), ("b", b)):
        if not isinstance(v, torch.Tensor):
            raise Mismatch(f"{what}: {name} should be a torch.Tensor, got {_type_of(v)}")
    return w.detach(), b.detach()


@CHAPTER.visible("train_linreg", points=1)
def visible_train_linreg(t, train_linreg):
    features, labels = train_data(t)
    with t.case("zero initialisation: num_epochs = 0 returns w = zeros (2, 1), b = zeros (1,)"):
        out = t.call(train_linreg, features, labels, 0.03, 0, 10, gen(1),
                     what="train_linreg(features, labels, lr=0.03, num_epochs=0, ...)")
        w, b = _pair_of_tensors(out, "train_linreg")
        expect_tensor(w, torch.zeros(2, 1), what="w before any training", check_dtype=False)
        expect_tensor(b, torch.zeros(1), what="b before any training", check_dtype=False)
    with t.case("3 epochs from zeros recover w = [2, -3.4], b = 4.2"):
        what = "train_linreg(features, labels, lr=0.03, num_epochs=3, batch_size=10, generator=g)"
        out = t.call(train_linreg, features, labels, 0.03, 3, 10, gen(1), what=what,
                     forbidden_python=[OPTIM])
        w, b = _pair_of_tensors(out, "train_linreg")
        if w.numel() != 2 or b.numel() != 1:
            raise Mismatch(f"{what} returned w of shape {tuple(w.shape)} and b of shape "
                           f"{tuple(b.shape)}, expected (2, 1) and (1,)")
        expect_tensor(w.reshape(2, 1), TRUE_W.reshape(2, 1), what="w after 3 epochs",
                      atol=0.05, rtol=0, check_dtype=False)
        expect_tensor(b.reshape(1), torch.tensor([TRUE_B]), what="b after 3 epochs", atol=0.05,
                      rtol=0, check_dtype=False)


# --- numbers: a Python float (or a 0-d tensor) compared with a reference -----------------------


def _number(got):
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        return float(got.detach())
    if isinstance(got, int | float) and not isinstance(got, bool):
        return float(got)
    return None


def number_check(got, expected, what, likely, rtol=1e-5, atol=1e-8, inputs=None):
    """`got` (a number or a 0-d tensor) against `expected`; names the first likely mistake
    ({cause: the number it gives, or None}) that `got` matches and the reference does not."""
    g = _number(got)
    close = lambda a, b: abs(a - b) <= atol + rtol * abs(b)  # noqa: E731
    cause = None
    if g is not None:
        cause = next((c for c, v in (likely or {}).items()
                      if _number(v) is not None and close(g, _number(v))
                      and not close(_number(v), expected)), None)
    expect_close(got, expected, what=what, atol=atol, rtol=rtol, inputs=inputs, cause=cause)


# --- best_constants (D2L 3.1, exercise 1: the constant that minimises a sum of losses) ---------


def best_constants_case(t, best_constants_, x, label):
    with t.case(label):
        b_sq, abs_min = t.ref("_best_constants_targets", x)  # the mean; min_b sum |x - b|
        likely = t.likely("best_constants", x)  # {cause: (b_sq, b_abs) of that mistake}
        what = f"best_constants(x of {x.numel()} values)"
        out = t.call(best_constants_, x, what=what)
        got_sq, got_abs = expect_pair(out, what, "b for the squared loss", "b for the absolute loss")
        scale = max(1.0, float(x.abs().max()))
        pairs = {c: v for c, v in likely.items() if type(v) is tuple and len(v) == 2}
        g_abs = _number(got_abs)
        both = {c: v for c, v in pairs.items()  # mistakes that explain both values first
                if g_abs is not None and abs(g_abs - v[1]) <= 1e-5 * scale}
        number_check(got_sq, b_sq, f"the first value (squared loss) of {what}",
                     {c: v[0] for c, v in {**both, **pairs}.items()},
                     rtol=1e-4, atol=1e-5 * scale, inputs={"x": x})
        g = _number(got_abs)
        if g is None:
            raise Mismatch(f"the second value (absolute loss) of {what} should be a number, but "
                           f"is {_type_of(got_abs)}")
        loss = float((x.double() - g).abs().sum())
        if loss > abs_min + 1e-5 * scale * x.numel():
            cause = next((c for c, v in likely.items() if type(v) is tuple and v[1] is not None
                          and abs(g - v[1]) <= 1e-5 * scale), None)
            raise Mismatch(
                f"the second value (absolute loss) of {what} is {fmt_number(g)}: there "
                f"sum |x - b| = {fmt_number(loss)}, but its minimum is {fmt_number(abs_min)}."
                + (f"\n  likely cause: {cause}" if cause else
                   "\n  likely cause: sum |x - b| is smallest at a median of x"))


@CHAPTER.visible("best_constants", points=1)
def visible_best_constants(t, best_constants_):
    best_constants_case(t, best_constants_, torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0]),
                        "worked example: x = [1, 2, 3, 4, 100] (one outlier)")


# --- fit_min_norm (D2L 3.1, exercise 4: X^T X without full rank) -------------------------------


def min_norm_case(t, fit_min_norm_, X, y, label):
    with t.case(label):
        w_ref = t.ref("fit_min_norm", X, y)
        likely = t.likely("fit_min_norm", X, y)
        what = f"fit_min_norm(X {tuple(X.shape)}, y {tuple(y.shape)})"
        try:
            got = t.call(fit_min_norm_, X, y, what=what, forbidden=NO_ITERATION,
                         forbidden_python=[OPTIM])
        except StudentError as exc:
            if "singular" in str(exc).lower():
                raise Mismatch(f"{exc}\n  likely cause: X^T X is singular here, so the normal "
                               "equations have no unique solution; use torch.linalg.pinv(X) @ y "
                               "(or lstsq), which picks the minimum-norm one") from None
            raise
        dt = X.dtype
        a = 1e-6 if dt == torch.float64 else 2e-3
        scale = max(1.0, float(w_ref.abs().max()))
        if isinstance(got, torch.Tensor) and got.shape == w_ref.shape and bool(
                torch.isfinite(got).all()):
            gd, Xd, yd = got.detach().double(), X.double(), y.double().reshape(-1, 1)
            res_got = float((Xd @ gd - yd).norm())
            res_ref = float((Xd @ w_ref.double() - yd).norm())
            if (res_got <= res_ref + a * 10 * (1 + float(yd.norm()))
                    and float(gd.norm()) > float(w_ref.double().norm()) * (1 + 10 * a) + a):
                raise Mismatch(
                    f"{what} returned a least-squares solution (its residual "
                    f"{fmt_number(res_got)} is the smallest possible) with norm "
                    f"{fmt_number(float(gd.norm()))}, but the minimum-norm one has norm "
                    f"{fmt_number(float(w_ref.double().norm()))}.\n  likely cause: a part in the "
                    "null space of X was added (e.g. dependent columns dropped, or a solver that "
                    "assumes full rank); torch.linalg.pinv(X) @ y has no such part")
        expect_tensor(got, w_ref, what=what, inputs={"X": X, "y": y}, likely=likely,
                      atol=a * scale, rtol=a)


@CHAPTER.visible("fit_min_norm", points=1)
def visible_fit_min_norm(t, fit_min_norm_):
    X = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]], dtype=torch.float64)
    y = torch.tensor([[2.0], [4.0], [6.0]], dtype=torch.float64)
    min_norm_case(t, fit_min_norm_, X, y,
                  "worked example: two equal columns, y = 2 x: the minimum-norm w is [1, 1]")


# --- estimation_errors (D2L 3.5, exercise 5: the error against the amount of data) -------------


def _rows(out) -> str:
    """The rows of a small tensor, rounded (a solver's last digits may vary between runs)."""
    return "[" + ", ".join("[" + ", ".join(f"{v:.4g}" for v in row) + "]"
                           for row in out.tolist()) + "]"


def errors_call(t, fn, sizes, w, b, noise, seed):
    what = f"estimation_errors({sizes}, w, b, noise={noise}, generator=g)"
    out = t.call(fn, sizes, w, b, noise, gen(seed), what=what, forbidden=NO_ITERATION,
                 forbidden_python=[OPTIM])
    if not isinstance(out, torch.Tensor):
        raise Mismatch(f"{what} should return a torch.Tensor of shape ({len(sizes)}, 2), "
                       f"but returned {_type_of(out)}")
    if tuple(out.shape) != (len(sizes), 2):
        raise Mismatch(f"{what} returned shape {tuple(out.shape)}, expected ({len(sizes)}, 2): "
                       "one row per size, [error of w, error of b]")
    out = out.detach().double()
    if not bool(torch.isfinite(out).all()):
        raise Mismatch(f"{what} returned values that are not finite: {_rows(out)}")
    if bool((out < -1e-9).any()):
        raise Mismatch(f"{what} returned negative errors {_rows(out)}\n  likely cause: the "
                       "signed difference b_hat - b; an error is a distance: norm or abs()")
    return out


def errors_stats(t, fn, sizes, w, b, noise, seeds, label):
    """Over many data sets, for each size n: the mean of ||w_hat - w||^2 (n - d - 2) /
    (noise^2 d) and of (b_hat - b)^2 n / (noise^2 (1 + d / (n - d - 2))) are both 1 for least
    squares with an intercept on standard normal features (theory, whatever the drawing
    method)."""
    with t.case(label, weight=2):
        d = len(w)
        zw, zb = {n: [] for n in sizes}, {n: [] for n in sizes}
        for s in seeds:
            out = errors_call(t, fn, sizes, w, b, noise, s)
            for n, (ew, eb) in zip(sizes, out.tolist()):
                zw[n].append(ew ** 2 * (n - d - 2) / (noise ** 2 * d))
                zb[n].append(eb ** 2 * n / (noise ** 2 * (1 + d / (n - d - 2))))
        hint = ("the errors should shrink like noise / sqrt(n): a new data set of n examples "
                "for each size, drawn with `noise`, fitted by least squares with an intercept; "
                "the error of w is the Euclidean norm of w_hat - w, that of b is |b_hat - b|")
        for n in sizes:
            m = len(zw[n])
            expect_stat(sum(zw[n]) / m, 1.0, 1.25 * math.sqrt(2 / d / m),
                        f"for n = {n}, the mean of ||w_hat - w||^2 (n - d - 2) / (noise^2 d)",
                        hint)
            expect_stat(sum(zb[n]) / m, 1.0, 1.25 * math.sqrt(2 / m),
                        f"for n = {n}, the mean of (b_hat - b)^2 n / noise^2 (corrected for "
                        "the estimated w)", hint)


@CHAPTER.visible("estimation_errors", points=1)
def visible_estimation_errors(t, fn):
    w = torch.tensor([2.0, -3.4], dtype=torch.float64)
    with t.case("noise = 0: the fit is exact at every size"):
        what = "estimation_errors([5, 50], w, 4.2, noise=0)"
        out = errors_call(t, fn, [5, 50], w, 4.2, 0.0, 0)
        if float(out.max()) > 1e-6:
            raise Mismatch(f"{what} returned {_rows(out)}, expected errors of about 0\n"
                           "  likely cause: the data are not drawn with `noise`, or the fit is "
                           "not least squares with an intercept")
    with t.case("the same generator seed gives the same errors"):
        a = errors_call(t, fn, [20, 200], w, 4.2, 0.5, 3)
        b_ = errors_call(t, fn, [20, 200], w, 4.2, 0.5, 3)
        if not torch.allclose(a, b_, rtol=1e-6, atol=1e-9):  # a solver may differ in rounding
            raise Mismatch("two calls with generators of the same seed gave different errors\n"
                           "  likely cause: synthetic_data is not passed `generator`")
    errors_stats(t, fn, [20, 400], w, 4.2, 0.5, range(10, 110),
                 "the errors shrink like noise / sqrt(n) (100 data sets of 20 and 400 examples)")


# --- lr_for_mean_loss (D2L 3.5, exercise 1: summed against averaged loss) ------------------------


def lr_case(t, fn, lr_sum, batch_size):
    what = f"lr_for_mean_loss({lr_sum}, {batch_size})"
    expected = t.ref("lr_for_mean_loss", lr_sum, batch_size)
    likely = t.likely("lr_for_mean_loss", lr_sum, batch_size)
    got = t.call(fn, lr_sum, batch_size, what=what)
    number_check(got, expected, what, likely, rtol=1e-6, atol=0)


@CHAPTER.visible("lr_for_mean_loss", points=1)
def visible_lr_for_mean_loss(t, fn):
    with t.case("worked example: lr 0.001 with the summed loss of minibatches of 32"):
        lr_case(t, fn, 0.001, 32)


# --- laplace_nll, poisson_nll, poisson_nll_log (D2L 3.1, exercises 5 and 8) -----------------------


def nll_case(t, fn, name, args, arg_names, extra_refs=(), tols=None):
    """A scalar loss of tensors `args` against the reference `name`; `extra_refs` names other
    references that are accepted too (the same loss without a constant term)."""
    expected = t.ref(name, *args)
    accepted = [t.ref(r, *args) for r in extra_refs]
    likely = t.likely(name, *args)
    inputs = dict(zip(arg_names, args))
    what = f"{name}({', '.join(arg_names)})"
    got = t.call(fn, *args, what=what)
    tols = tols or tol(args[0].dtype, 10)
    for alt in accepted:
        if (isinstance(got, torch.Tensor) and got.shape == alt.shape and got.dtype == alt.dtype
                and torch.allclose(got.detach(), alt, **tols)):
            return
    expect_tensor(got, expected, what=what, inputs=inputs, likely=likely, **tols)


@CHAPTER.visible("laplace_nll", points=1)
def visible_laplace_nll(t, fn):
    y_hat, y = torch.tensor([[1.0], [2.0], [0.0]]), torch.tensor([1.5, 1.0, 0.0])
    with t.case("worked example: y_hat (3, 1), y (3,), scale 1"):
        nll_case(t, fn, "laplace_nll", (y_hat, y), ("y_hat", "y"))
    with t.case("scale 2"):
        nll_case(t, fn, "laplace_nll", (y_hat, y, 2.0), ("y_hat", "y", "scale"))


@CHAPTER.visible("poisson_nll", points=1)
def visible_poisson_nll(t, fn):
    rate, k = torch.tensor([0.5, 2.0, 4.0]), torch.tensor([0.0, 3.0, 4.0])
    with t.case("worked example: rate = [0.5, 2, 4], k = [0, 3, 4]"):
        nll_case(t, fn, "poisson_nll", (rate, k), ("rate", "k"), ("_poisson_nll_no_const",))


@CHAPTER.visible("poisson_nll_log", points=1)
def visible_poisson_nll_log(t, fn):
    log_rate, k = torch.tensor([-1.0, 0.0, 1.5]), torch.tensor([0.0, 3.0, 4.0])
    with t.case("worked example: log_rate = [-1, 0, 1.5], k = [0, 3, 4]"):
        nll_case(t, fn, "poisson_nll_log", (log_rate, k), ("log_rate", "k"),
                 ("_poisson_nll_log_no_const",))
