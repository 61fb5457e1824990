"""05_dropout: the visible checks (worked examples) of each exercise, and the judging helpers
the hidden checks share.

Public: this module ships to students. Reference values come from `t.ref`, and what likely
mistakes produce from `t.likely`; the references and the hidden checks are the instructor's
(`grader.chapters.dropout`).

`dropout_layer` is random: its checks are statistical (`grader.cases.expect_stat`, Z = 5
standard errors, a correct answer fails one comparison with probability 5.7e-7).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from grader.cases import FALSE_ALARM, Z, expect_stat, gen, randn, tol
from grader.feedback import Mismatch, expect_close, expect_tensor, fmt_number, type_name
from grader.registry import Chapter
from grader.remote import Handle, is_instance

CHAPTER = Chapter("05_dropout", "Dropout")


def _kind(x) -> str:
    """The type of a value or of a student's object (a handle), for feedback."""
    return x.type_name if isinstance(x, Handle) else type_name(x)


def _close(a: float, b: float, rel: float = 1e-4) -> bool:
    return abs(a - b) <= rel * max(1.0, abs(b))


# --- dropout_layer ----------------------------------------------------------------------------

NO_LIBRARY_DROPOUT = {F.dropout: "torch.nn.functional.dropout", torch.dropout: "torch.dropout",
                      F.dropout1d: "F.dropout1d", F.dropout2d: "F.dropout2d",
                      F.alpha_dropout: "F.alpha_dropout", torch.dropout_: "torch.dropout_"}
if hasattr(torch, "native_dropout"):
    NO_LIBRARY_DROPOUT[torch.native_dropout] = "torch.native_dropout"
NO_DROPOUT_MODULE = [("torch.nn.modules.dropout", None, "nn.Dropout")]


def _inputs(shape, seed, dtype):
    """No zeros, both signs: every zero in the output was dropped, every ratio is telling."""
    x = randn(*shape, seed=seed)
    return (torch.sign(x) * (x.abs() + 0.5)).to(dtype)


def _drop(t, fn, X, p, what, *generator):
    """fn(X, p, *generator), checked for type, dtype, shape and NaN."""
    out = t.call(fn, X, p, *generator, what=what, forbidden=NO_LIBRARY_DROPOUT,
                 forbidden_python=NO_DROPOUT_MODULE)
    if not isinstance(out, torch.Tensor):
        raise Mismatch(f"{what} should return a torch.Tensor, but returned {_kind(out)}"
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
    return out.detach()


def _scale(out, X, scale, likely_scales, what):
    """Every element is 0 or `scale` * X; returns the mask of zeroed elements."""
    zero = out == 0
    kept = ~zero
    if not kept.any():
        return zero
    ratio = (out[kept] / X[kept]).double()
    if torch.allclose(ratio, torch.full_like(ratio, scale), rtol=1e-5, atol=0):
        return zero
    med = ratio.median().item()
    if not torch.allclose(ratio, torch.full_like(ratio, med), rtol=1e-4, atol=0):
        cause = ("each element should be either 0 or X / (1 - dropout); multiply X by a 0/1 "
                 "mask, then scale")
    else:
        cause = next((c for c, v in likely_scales.items()
                      if v is not None and _close(med, v) and not _close(v, scale)),
                     f"the survivors are scaled by {fmt_number(med)}")
    raise Mismatch(f"{what}: the elements that are not zeroed should equal X / (1 - dropout) "
                   f"= {fmt_number(scale)} * X, but are {fmt_number(med)} * X (median ratio)\n"
                   f"  likely cause: {cause}")


def _fraction(zero, p, likely_zeroed, what):
    N = zero.numel()
    frac = zero.double().mean().item()
    se = math.sqrt(p * (1 - p) / N)
    cause = next((c for c, v in likely_zeroed.items()
                  if v is not None and abs(frac - v) <= Z * se and abs(v - p) > Z * se), None)
    if cause is None:
        cause = ("nothing is dropped: the mask keeps every element" if frac == 0 else
                 "each element should be zeroed with probability dropout (torch.rand(X.shape) "
                 "> dropout keeps an element)")
    expect_stat(frac, p, se, f"{what}: the fraction of elements zeroed", cause)


def _pairs_zeroed(a, b, both, what, cause):
    """Two halves of independent masks: both zero with probability `both`."""
    N = a.numel()
    rate = (a & b).double().mean().item()
    expect_stat(rate, both, math.sqrt(both * (1 - both) / N), what, cause)


def _as_matrix(zero):
    """The mask as a matrix: rows are the examples (X's first axis)."""
    if zero.dim() < 2:
        zero = zero.reshape(-1, 1) if zero.numel() % 2 else zero.reshape(2, -1).T
    return zero.reshape(zero.shape[0], -1)


def _log_prob_uniform_lines(n_lines, length, p):
    """log P(each of n_lines independent lines of `length` elements is all zeroed or all
    kept), for elements zeroed independently with probability p."""
    if p <= 0 or p >= 1:
        return 0.0
    hi, lo = max(p, 1 - p), min(p, 1 - p)
    return n_lines * length * math.log(hi) + n_lines * math.log1p((lo / hi) ** length)


def _structure(zero, p, what):
    """Exact patterns of a mask that is not drawn per element (each one impossible for a
    correct answer except with probability below FALSE_ALARM)."""
    M = _as_matrix(zero)
    R, C = M.shape
    if not 0 < int(M.sum()) < M.numel():
        return
    limit = math.log(FALSE_ALARM)
    if R >= 2 and _log_prob_uniform_lines(C, R, p) < limit and bool((M == M[0]).all()):
        raise Mismatch(f"{what}: every row (example) has exactly the same elements zeroed\n"
                       "  likely cause: one mask shared by all rows (the examples): draw the "
                       "mask with X's full shape, torch.rand(X.shape), so that every element "
                       "gets its own number")
    if C >= 2 and _log_prob_uniform_lines(R, C, p) < limit and bool((M.all(1) | (~M).all(1)).all()):
        raise Mismatch(f"{what}: every row (example) is either zeroed whole or kept whole\n"
                       "  likely cause: whole rows (or columns) are dropped together: every "
                       "element needs its own random number, torch.rand(X.shape)")


def _independence(zero, both, what):
    M = _as_matrix(zero)
    R, C = M.shape
    if R >= 2:
        r = R // 2 * 2
        _pairs_zeroed(M[0:r:2], M[1:r:2], both,
                      f"{what}: how often an element and the one below it are both zeroed",
                      "one mask shared by all rows (the examples): draw the mask with X's full "
                      "shape, torch.rand(X.shape), so that every element gets its own number")
    if C >= 2:
        c = C // 2 * 2
        _pairs_zeroed(M[:, 0:c:2], M[:, 1:c:2], both,
                      f"{what}: how often two neighbouring elements of a row are both zeroed",
                      "whole rows (or columns) are dropped together: every element needs its "
                      "own random number, torch.rand(X.shape)")


def dropout_case(t, fn, shape, p, dtype, seed):
    """One call on X of `shape`: the scale of the survivors, the fraction zeroed, independence."""
    scale, likely_scales = t.ref("_dropout_scale", p), t.likely("_dropout_scale", p)
    zeroed, likely_zeroed = t.ref("_dropout_zeroed", p), t.likely("_dropout_zeroed", p)
    both = t.ref("_dropout_both_zeroed", p)
    X = _inputs(shape, seed, dtype)
    what = f"dropout_layer(X {tuple(shape)} {str(dtype)[6:]}, dropout={p}, generator=g)"
    out = _drop(t, fn, X, p, what, gen(seed))
    zero = _scale(out, X, scale, likely_scales, what)
    _structure(zero, zeroed, what)
    _fraction(zero, zeroed, likely_zeroed, what)
    _independence(zero, both, what)


def edge_case(t, fn, X, p):
    """dropout = 0 or 1: the result is exact."""
    expected, likely = t.ref("_dropout_edge", X, p), t.likely("_dropout_edge", X, p)
    what = f"dropout_layer(X {tuple(X.shape)} {str(X.dtype)[6:]}, dropout={p})"
    out = _drop(t, fn, X, p, what, gen(0))
    label = " (nothing is dropped: X's values)" if p == 0 else " (everything is dropped: zeros)"
    expect_tensor(out, expected, what=what + label, atol=0, rtol=1e-7 if p == 0 else 0,
                  likely=likely)


@CHAPTER.visible("dropout_layer", points=3, d2l=("dropout_layer",))
def visible_dropout_layer(t, fn):
    with t.case("worked example: X (100, 100) float32, dropout = 0.5: about half the elements "
                "zeroed, the others doubled", weight=2):
        dropout_case(t, fn, (100, 100), 0.5, torch.float32, 0)
    with t.case("dropout = 0 returns X's values, dropout = 1 returns zeros"):
        X = _inputs((3, 4), 1, torch.float32)
        edge_case(t, fn, X, 0.0)
        edge_case(t, fn, X, 1.0)


# --- DropoutMLP -----------------------------------------------------------------------------

LAYERS = ("lin1", "lin2", "lin3")


def mlp_weights(args, seed, dtype, positive=True):
    """The parameters the check gives lin1, lin2, lin3: {"lin1.weight": ..., ...}.

    positive: pre-activations all positive (biases 2 and 3, small weights), so that a zero is
    a dropped unit. Otherwise zero-mean weights and biases, so that the ReLUs matter."""
    n_in, n_out, h1, h2 = args[:4]
    state = {}
    for j, (name, (i, o), bias, scale) in enumerate((("lin1", (n_in, h1), 2.0, 0.3),
                                                     ("lin2", (h1, h2), 3.0, 0.15),
                                                     ("lin3", (h2, n_out), 0.0, 0.5))):
        w = randn(o, i, seed=seed + j) / math.sqrt(i)
        state[f"{name}.weight"] = (w * (scale if positive else 1.0)).to(dtype)
        state[f"{name}.bias"] = (torch.full((o,), bias, dtype=torch.float64) if positive else
                                 randn(o, seed=seed + 10 + j) * 0.5).to(dtype)
    return state


def _build(t, cls, args):
    """The student's net, with its layers lin1, lin2, lin3 checked; (net, {name: layer})."""
    what = f"DropoutMLP{args}"
    net = t.call(cls, *args, what=what)
    if not is_instance(net, torch.nn.Module):
        raise Mismatch(f"{what} should be an nn.Module, but is {_kind(net)}\n  likely cause: "
                       "class DropoutMLP(nn.Module) with super().__init__() first")
    n_in, n_out, h1, h2 = args[:4]
    layers = {}
    for name, (i, o) in zip(LAYERS, ((n_in, h1), (h1, h2), (h2, n_out))):
        lin = getattr(net, name, None)
        if not is_instance(lin, torch.nn.Linear):
            raise Mismatch(f"{what} should have an nn.Linear attribute `{name}`, but "
                           f"{name} is {_kind(lin)}")
        shape = (lin.in_features, lin.out_features)
        if shape != (i, o):
            raise Mismatch(f"{what}.{name} is nn.Linear({shape[0]}, {shape[1]}), "
                           f"expected nn.Linear({i}, {o})")
        layers[name] = lin
    return net, layers


def _load(net, layers, state, dtype):
    """Give the student's layers the check's parameters (in `dtype`)."""
    net.method("to", dtype)
    for name, lin in layers.items():
        lin.method("load_state_dict", {"weight": state[f"{name}.weight"],
                                       "bias": state[f"{name}.bias"]}, strict=False)


def _forward(t, net, X, what):
    try:
        out = t.call(net, X, what=what)
    except Mismatch as failure:
        if "mat1 and mat2" in str(failure) and X.dim() > 2:
            text = str(failure).split("\n  likely cause:")[0]
            raise Mismatch(f"{text}\n  likely cause: X is not flattened: reshape it to "
                           "(X.shape[0], -1) before lin1") from None
        raise
    if not isinstance(out, torch.Tensor):
        raise Mismatch(f"{what} should return a tensor, but returned {_kind(out)}")
    return out.detach()


def _eval_case(t, net, X, state, what, dtype):
    expected, likely = t.ref("_mlp_forward", state, X), t.likely("_mlp_forward", state, X)
    net.method("eval")
    out1 = _forward(t, net, X, what)
    out2 = _forward(t, net, X, what)
    if out1.shape == out2.shape and not torch.equal(out1, out2):
        raise Mismatch(f"{what}: two forward passes in evaluation mode (net.eval()) gave "
                       "different outputs\n  likely cause: dropout is applied in evaluation mode "
                       "too; apply it only `if self.training`")
    expect_tensor(out1, expected, what=what, likely=likely, **tol(dtype, 10))


def _dropped_units(t, where, layer, inp, before, p, other):
    """`inp` is `before` (all positive) after dropout with probability p (not `other`)."""
    scale, other_scale = t.ref("_dropout_scale", p), t.ref("_dropout_scale", other)
    if inp is None or before is None or inp.shape != before.shape:
        raise Mismatch(f"{where} has shape {None if inp is None else tuple(inp.shape)}, "
                       f"expected {None if before is None else tuple(before.shape)}")
    if p == 0:
        expect_tensor(inp, before, what=where + f" with dropout {p} (nothing dropped)",
                      **tol(inp.dtype, 10))
        return
    zero = inp == 0
    kept = ~zero
    ratio = (inp[kept] / before[kept]).double()
    if kept.any() and not torch.allclose(ratio, torch.full_like(ratio, scale), rtol=1e-4,
                                         atol=0):
        if other not in (0, 1) and torch.allclose(ratio, torch.full_like(ratio, other_scale),
                                                  rtol=1e-4, atol=0):
            cause = "dropout1 and dropout2 are swapped"
        elif torch.allclose(ratio, torch.ones_like(ratio), rtol=1e-4, atol=0):
            cause = "no dropout in training mode (or the survivors are not rescaled)"
        else:
            cause = "dropout is applied somewhere else than after relu(lin1) and relu(lin2)"
        raise Mismatch(f"{where}: the units that are not dropped should be relu(...) / "
                       f"(1 - {p}) = {fmt_number(scale)} * relu(...), but are "
                       f"{fmt_number(ratio.median().item())} times that\n"
                       f"  likely cause: {cause}")
    frac = zero.double().mean().item()
    se = math.sqrt(p * (1 - p) / zero.numel())
    cause = ("no dropout in training mode: `if self.training:` apply dropout_layer"
             if frac == 0 else "dropout1 and dropout2 are swapped"
             if other != p and abs(frac - other) <= Z * math.sqrt(other * (1 - other)
                                                                  / zero.numel())
             else f"units after {layer} should be dropped with probability {p}")
    expect_stat(frac, p, se, f"{where}: the fraction of units zeroed", cause)


def mlp_case(t, cls, args, batch, image, seed, dtype=torch.float32):
    """Eval mode against the reference (ReLUs matter), then training mode (what is dropped)."""
    n_in, n_out, h1, h2, p1, p2 = args
    mixed, positive = mlp_weights(args, seed, dtype, False), mlp_weights(args, seed, dtype)
    X = torch.rand(batch, *image, generator=gen(seed), dtype=torch.float64).to(dtype)
    net, layers = _build(t, cls, args)
    what = f"DropoutMLP{args} on X {tuple(X.shape)}"
    _load(net, layers, mixed, dtype)
    _eval_case(t, net, X, mixed, what + " in eval mode (no dropout)", dtype)
    _load(net, layers, positive, dtype)
    _eval_case(t, net, X, positive, what + " in eval mode (no dropout)", dtype)
    net.method("train")
    rec = t.build("dropout.recorder", layers)
    try:
        out = _forward(t, net, X, what + " in training mode")
        seen = rec.method("last")
    finally:
        rec.method("remove")
    for name in LAYERS:
        if name not in seen:
            raise Mismatch(f"{what}: net.{name} was not called in forward; call the layers "
                           "as modules, self.lin1(X), self.lin2(H1), self.lin3(H2)")
    for layer, label, inp, before, p, other in (
            ("lin2", "lin2 (after dropout1)", seen["lin2"][0], seen["lin1"][1], p1, p2),
            ("lin3", "lin3 (after dropout2)", seen["lin3"][0], seen["lin2"][1], p2, p1)):
        _dropped_units(t, f"{what} in training mode, the input of {label}", layer, inp, before,
                       p, other)
    out3 = seen["lin3"][1]
    if out3 is None or out3.shape != out.shape or not torch.equal(out3, out):
        raise Mismatch(f"{what} in training mode: the output should be lin3's output\n"
                       "  likely cause: dropout (or an activation) applied to the output layer")
    again = _forward(t, net, X, what + " in training mode")
    if torch.equal(again, out):
        raise Mismatch(f"{what}: two forward passes in training mode gave the same output\n"
                       "  likely cause: the dropout mask is fixed (a seed set inside forward, "
                       "or a mask drawn once in __init__)")
    expected = t.ref("_mlp_forward", positive, X)
    net.method("eval")
    expect_tensor(_forward(t, net, X, what), expected,
                  what=what + " in eval mode after training mode", **tol(dtype, 10))


@CHAPTER.visible("DropoutMLP", points=2)
def visible_dropout_mlp(t, cls):
    with t.case("worked example: DropoutMLP(16, 3, 64, 32, 0.2, 0.5) on X (128, 1, 4, 4)"):
        mlp_case(t, cls, (16, 3, 64, 32, 0.2, 0.5), 128, (1, 4, 4), 0)


# --- evaluate_loss --------------------------------------------------------------------------


def loss_net_layers(d_in, d_out):
    """The judge's net: in training mode its Dropout drops inputs, so that a loss computed in
    training mode is off."""
    return [("Dropout", [0.5], {}), ("Linear", [d_in, 8], {}), ("Tanh", [], {}),
            ("Linear", [8, d_out], {})]


def loss_inputs(n, d_in, d_out, classes, seed, dtype):
    """(X, y, state) of one case."""
    X = randn(n, d_in, seed=seed, dtype=dtype)
    if classes:
        y = torch.randint(0, d_out, (n,), generator=gen(seed + 1))
    else:
        y = randn(n, 1, seed=seed + 1, dtype=dtype)
    state = {}
    for j, (key, shape) in enumerate((("1.weight", (8, d_in)), ("1.bias", (8,)),
                                      ("3.weight", (d_out, 8)), ("3.bias", (d_out,)))):
        state[key] = randn(*shape, seed=seed + j, dtype=dtype)
    return X, y, state


def loss_case(t, fn, n, batch_size, classes, start_training, seed, dtype=torch.float32,
              as_loader=True):
    d_in, d_out = 6, (4 if classes else 1)
    layers = loss_net_layers(d_in, d_out)
    X, y, state = loss_inputs(n, d_in, d_out, classes, seed, dtype)
    loss_name = "CrossEntropyLoss" if classes else "MSELoss"
    spec = (layers, state, dtype, X, y, batch_size, loss_name)
    expected, likely = t.ref("_evaluate_loss_of", *spec), t.likely("_evaluate_loss_of", *spec)
    net = t.build("sequential", layers, None, start_training)
    net.method("to", dtype)
    net.method("load_state_dict", state)
    watcher = t.build("mode_watcher", net)
    first = net.method("__getitem__", 0)
    sub_watcher = t.build("mode_watcher", first)
    if as_loader:
        data_iter = t.build("tensor_loader", X, y, batch_size)
    else:
        data_iter = [(X[i:i + batch_size], y[i:i + batch_size]) for i in range(0, n, batch_size)]
    loss = t.build("loss", loss_name, reduction="none")
    mode = "training" if start_training else "evaluation"
    what = (f"evaluate_loss(net, data_iter, loss) over {n} examples in batches of {batch_size}, "
            f"net in {mode} mode")
    got = t.call(fn, net, data_iter, loss, what=what)
    records, sub_records = watcher.method("records"), sub_watcher.method("records")
    if not records:
        raise Mismatch(f"{what}: net was never called")
    if any(r["training"] for r in records):
        raise Mismatch(f"{what}: net was in training mode while evaluating, so dropout was "
                       "still on\n  likely cause: net.eval() is not called before the loop")
    if any(r["training"] for r in sub_records):
        raise Mismatch(f"{what}: some of net's submodules were in training mode\n  likely "
                       "cause: call net.eval() on the whole net")
    if any(r["grad_enabled"] for r in records):
        raise Mismatch(f"{what}: gradients were recorded during evaluation (wasted memory and "
                       "time)\n  likely cause: the loop is not inside `with torch.no_grad():`")
    after = net.training
    if after != start_training or first.training != start_training:
        raise Mismatch(f"{what}: net was in {mode} mode before and is in "
                       f"{'training' if after else 'evaluation'} mode afterwards; its mode "
                       "afterwards should be what it was before\n  likely cause: "
                       + ("the mode is not restored: remember net.training and call "
                          "net.train(was_training) at the end" if start_training else
                          "net.train() at the end switches an evaluating net to training; "
                          "restore the mode it had instead"))
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.detach().item()
    cause = None
    if isinstance(got, int | float) and not isinstance(got, bool):
        cause = next((c for c, v in likely.items()
                      if isinstance(v, float) and abs(got - v) <= 1e-5 * abs(v)
                      and abs(v - expected) > 1e-5 * abs(expected)), None)
    expect_close(got, expected, what=what, atol=1e-6, rtol=1e-5, cause=cause)


@CHAPTER.visible("evaluate_loss", points=2, d2l=("evaluate_loss",))
def visible_evaluate_loss(t, fn):
    with t.case("worked example: 10 examples in batches of 4 (4, 4, 2), squared loss, net in "
                "training mode"):
        loss_case(t, fn, 10, 4, False, True, 0, as_loader=False)


# --- dropconnect_linear (D2L 5.6, exercise 6) -------------------------------------------------


def dropconnect_inputs(n_in, n_out, n_dense, seed, dtype):
    """(X, W, b): X is the identity (n_in rows: row i reads row i of the thinned W) followed by
    n_dense dense rows; W has no zeros, so that every zero of a thinned weight was dropped."""
    W = _inputs((n_in, n_out), seed, dtype)
    b = randn(n_out, seed=seed + 1, dtype=dtype)
    dense = torch.rand(n_dense, n_in, generator=gen(seed + 2), dtype=torch.float64) + 0.5
    X = torch.cat([torch.eye(n_in, dtype=torch.float64), dense]).to(dtype)
    return X, W, b


def _linear_out(t, fn, X, W, b, p, what, *generator):
    """fn(X, W, b, p, *generator), checked for type, dtype, shape and NaN."""
    out = t.call(fn, X, W, b, p, *generator, what=what)
    if not isinstance(out, torch.Tensor):
        raise Mismatch(f"{what} should return a torch.Tensor, but returned {_kind(out)}"
                       + ("\n  likely cause: the function has no `return` statement"
                          if out is None else ""))
    if out.dtype != X.dtype:
        raise Mismatch(f"{what} returned dtype {out.dtype}, expected {X.dtype} (the dtype of "
                       "X and W)\n  likely cause: a mask or tensor created in float32 "
                       "(.float()); use .to(W.dtype)")
    shape = (X.shape[0], W.shape[1])
    if tuple(out.shape) != shape:
        raise Mismatch(f"{what} returned shape {tuple(out.shape)}, expected {shape} "
                       "(X.shape[0], W.shape[1])\n  likely cause: the output is X @ W_thinned "
                       "+ b, with W of shape (num_inputs, num_outputs)")
    if torch.isnan(out).any():
        raise Mismatch(f"{what} returned NaN")
    return out.detach()


def _weight_structure(zero, p, what):
    """A mask drawn per row or per column of W instead of per weight."""
    R, C = zero.shape
    if not 0 < int(zero.sum()) < zero.numel():
        return
    limit = math.log(FALSE_ALARM)
    if R >= 2 and _log_prob_uniform_lines(C, R, p) < limit and bool((zero == zero[0]).all()):
        raise Mismatch(f"{what}: every row of W (every input) has exactly the same weights "
                       "dropped\n  likely cause: a mask of shape (num_outputs,), one number per "
                       "output unit, broadcast over the rows: draw one number per weight, "
                       "torch.rand(W.shape)")
    if C >= 2 and _log_prob_uniform_lines(R, C, p) < limit and bool(
            (zero.all(1) | (~zero).all(1)).all()):
        raise Mismatch(f"{what}: every row of W is either dropped whole or kept whole\n  "
                       "likely cause: the inputs are dropped (ordinary dropout on X, or a mask of "
                       "shape (num_inputs, 1)), not the individual weights: draw one number per "
                       "weight, torch.rand(W.shape)")


def dropconnect_case(t, fn, n_in, n_out, n_dense, p, dtype, seed):
    """One call on X = [identity; dense rows]: the thinned W read off the identity rows (scale,
    fraction dropped, independence), then the dense rows must use that same thinned W."""
    scale, likely_scales = t.ref("_dropout_scale", p), t.likely("_dropconnect_scale", p)
    zeroed, likely_zeroed = t.ref("_dropout_zeroed", p), t.likely("_dropconnect_zeroed", p)
    both = t.ref("_dropout_both_zeroed", p)
    X, W, b = dropconnect_inputs(n_in, n_out, n_dense, seed, dtype)
    what = (f"dropconnect_linear(X ({X.shape[0]}, {n_in}), W ({n_in}, {n_out}), b, p={p}, "
            f"generator=g), {str(dtype)[6:]}")
    out = _linear_out(t, fn, X, W, b, p, what, gen(seed + 1000))
    thinned = out[:n_in] - b  # rows of the identity: row i of the thinned W
    zero = thinned == 0
    kept = ~zero
    if kept.any():
        ratio = (thinned[kept] / W[kept]).double()
        if not torch.allclose(ratio, torch.full_like(ratio, scale), rtol=1e-4, atol=0):
            med = ratio.median().item()
            if not torch.allclose(ratio, torch.full_like(ratio, med), rtol=1e-3, atol=0):
                cause = ("each weight should be either dropped (0) or W / (1 - p), and b added "
                         "unchanged (this check reads the thinned weights as output - b)")
            else:
                cause = next((c for c, v in likely_scales.items()
                              if isinstance(v, float) and _close(med, v)
                              and not _close(v, scale)),
                             f"the kept weights are scaled by {fmt_number(med)}")
            raise Mismatch(f"{what}: with X the identity, row i of the output minus b is row i "
                           f"of the thinned weights; the weights kept should be W / (1 - p) = "
                           f"{fmt_number(scale)} * W, but are {fmt_number(med)} * W (median "
                           f"ratio)\n  likely cause: {cause}")
    _weight_structure(zero, zeroed, what)
    frac = zero.double().mean().item()
    se = math.sqrt(zeroed * (1 - zeroed) / zero.numel())
    cause = next((c for c, v in likely_zeroed.items()
                  if v is not None and abs(frac - v) <= Z * se and abs(v - zeroed) > Z * se),
                 "nothing is dropped: every weight is kept" if frac == 0 else
                 "each weight should be dropped with probability p (torch.rand(W.shape) > p "
                 "keeps a weight)")
    expect_stat(frac, zeroed, se, f"{what}: the fraction of weights dropped", cause)
    if zero.shape[0] >= 2:
        r = zero.shape[0] // 2 * 2
        _pairs_zeroed(zero[0:r:2], zero[1:r:2], both,
                      f"{what}: how often a weight and the one below it in W are both dropped",
                      "the weights are not dropped independently: one number per weight, "
                      "torch.rand(W.shape)")
    if n_dense:
        # judge logic, no reference: the dense rows must use the thinned W seen above
        dense_out = out[n_in:]
        Xd, Td, bd = X[n_in:].double(), thinned.double(), b.double()
        consistent = Xd @ Td + bd
        # rounding: at most n_in * eps of the sum of the magnitudes (Td itself was read as
        # (W_thinned + b) - b), with a margin of 4
        bound = 4 * n_in * torch.finfo(dtype).eps * (Xd.abs() @ (Td.abs() + bd.abs())
                                                     + bd.abs()) + 1e-12
        if not bool(((dense_out.double() - consistent).abs() <= bound).all()):
            rest = dense_out - b
            dropped = (rest == 0).double().mean().item()
            outputs = zeroed > 0 and abs(dropped - zeroed) <= Z * math.sqrt(
                zeroed * (1 - zeroed) / rest.numel())
            cause = (DROPPED_OUTPUTS if outputs else MASK_PER_EXAMPLE)
            raise Mismatch(f"{what}: every row of X should be multiplied by the same thinned "
                           "weights (one mask per call), but the dense rows of X do not give "
                           "X @ W_thinned + b for the W_thinned that the identity rows show\n"
                           f"  likely cause: {cause}")


DROPPED_OUTPUTS = ("the outputs X @ W are dropped (ordinary dropout on the activations), not "
                   "the weights: thin W itself, then compute X @ W_thinned + b")
MASK_PER_EXAMPLE = ("a different mask for each example (row of X): here one mask of W's shape "
                    "is drawn per call, and the whole batch uses the same thinned W")
BIAS_DROPPED = "the bias is dropped too: DropConnect thins the weights W; add b unchanged"


def dropconnect_bias_case(t, fn, n_in, n_out, p, dtype, seed):
    """X = 0: the output is b in every row, whatever the mask."""
    _, W, b = dropconnect_inputs(n_in, n_out, 0, seed, dtype)
    X = torch.zeros(6, n_in, dtype=dtype)
    expected = t.ref("_dropconnect_zero_input", X, W, b, p)
    likely = t.likely("_dropconnect_zero_input", X, W, b, p)
    what = f"dropconnect_linear(X = zeros (6, {n_in}), W, b, p={p}, generator=g)"
    out = _linear_out(t, fn, X, W, b, p, what, gen(seed))
    if (out == 0).any() and not (out == 0).all():
        likely = {BIAS_DROPPED: out, **likely}
    expect_tensor(out, expected, what=what + " (every row is b)", likely=likely,
                  **tol(dtype, 10))


def dropconnect_exact_case(t, fn, X, W, b):
    """p = 0: nothing is dropped, the output is X @ W + b."""
    expected, likely = t.ref("_dropconnect_exact", X, W, b), t.likely("_dropconnect_exact", X, W, b)
    what = f"dropconnect_linear(X {tuple(X.shape)}, W {tuple(W.shape)}, b, p=0, generator=g)"
    out = _linear_out(t, fn, X, W, b, 0.0, what, gen(0))
    expect_tensor(out, expected, what=what + " (nothing dropped: X @ W + b)",
                  likely=likely, **tol(X.dtype, 10))


@CHAPTER.visible("dropconnect_linear", points=1)
def visible_dropconnect_linear(t, fn):
    with t.case("X = 0 gives b in every row (the bias is not dropped); p = 0 gives X @ W + b"):
        dropconnect_bias_case(t, fn, 5, 3, 0.5, torch.float32, 1)
        X = torch.tensor([[1.0, 2.0], [0.5, -1.0], [3.0, 0.0]])
        W = torch.tensor([[1.0, -1.0, 0.5], [2.0, 0.0, 1.0]])
        dropconnect_exact_case(t, fn, X, W, torch.tensor([0.1, 0.2, 0.3]))
    with t.case("worked example: W (40, 50), p = 0.3, X = the identity (40 rows: they show the "
                "thinned weights) and 8 dense rows (they must use the same thinned weights)",
                weight=2):
        dropconnect_case(t, fn, 40, 50, 8, 0.3, torch.float32, 0)


# --- gaussian_noise_layer (D2L 5.6, exercise 7) -----------------------------------------------


def noise_inputs(shape, seed, dtype):
    """No zeros, two magnitudes (|x| near 0.5 and near 4): additive noise shows as a ratio
    out / X whose spread depends on |x|. Returns (X, mask of the large elements)."""
    x = randn(*shape, seed=seed)
    big = torch.rand(*shape, generator=gen(seed + 1)) < 0.5
    mag = torch.where(big, 4.0 + 0.5 * x.abs().clamp(max=2), 0.5 + 0.1 * x.abs().clamp(max=2))
    return (torch.sign(x) + (x == 0)).mul(mag).to(dtype), big


def _noise_out(t, fn, X, sigma, training, what, *generator):
    out = t.call(fn, X, sigma, training, *generator, what=what)
    if not isinstance(out, torch.Tensor):
        raise Mismatch(f"{what} should return a torch.Tensor, but returned {_kind(out)}"
                       + ("\n  likely cause: the function has no `return` statement"
                          if out is None else ""))
    if out.dtype != X.dtype:
        raise Mismatch(f"{what} returned dtype {out.dtype}, expected {X.dtype} (X's dtype)\n"
                       "  likely cause: noise drawn in float32; pass dtype=X.dtype to "
                       "torch.randn")
    if out.shape != X.shape:
        raise Mismatch(f"{what} returned shape {tuple(out.shape)}, expected {tuple(X.shape)}")
    if not torch.isfinite(out).all():
        raise Mismatch(f"{what} returned NaN or infinite values")
    return out.detach()


def noise_eval_case(t, fn, X, sigma):
    expected = t.ref("_noise_eval", X, sigma)
    what = f"gaussian_noise_layer(X {tuple(X.shape)}, sigma={sigma}, training=False)"
    out = _noise_out(t, fn, X, sigma, False, what, gen(0))
    if not torch.equal(out, expected):
        cause = ("the noise is applied in evaluation mode too: with training=False return X "
                 "unchanged (like dropout, the noise is for training only)"
                 if not torch.allclose(out, expected, rtol=1e-6, atol=0) else
                 "X is changed slightly in evaluation mode: return X's values exactly")
        expect_tensor(out, expected, what=what + " (X's values)", atol=0, rtol=0,
                      likely={cause: out})


def noise_case(t, fn, shape, sigma, dtype, seed):
    """Training mode: r = out / X should be independent N(1, sigma^2) draws, whatever |X|."""
    mean, likely_mean = t.ref("_noise_ratio_mean", sigma), t.likely("_noise_ratio_mean", sigma)
    var = t.ref("_noise_ratio_var", sigma, 1.0)
    tail = t.ref("_noise_tail", 2.0)
    X, big = noise_inputs(shape, seed, dtype)
    likely_small = t.likely("_noise_ratio_var", sigma, 0.55)
    likely_big = t.likely("_noise_ratio_var", sigma, 4.5)
    what = (f"gaussian_noise_layer(X {tuple(shape)} {str(dtype)[6:]}, sigma={sigma}, "
            "training=True, generator=g)")
    out = _noise_out(t, fn, X, sigma, True, what, gen(seed + 1000))
    r = (out / X).double()
    M = r.reshape(r.shape[0], -1) if r.dim() > 1 else r.reshape(2, -1).T
    if M.shape[0] >= 2 and torch.allclose(M, M[0].expand_as(M), rtol=1e-5, atol=1e-6):
        raise Mismatch(f"{what}: every row (example) got exactly the same noise\n  likely "
                       "cause: the noise is drawn for one example (X.shape[1:]) and broadcast "
                       "over the batch: draw it with X's full shape, torch.randn(X.shape)")
    if torch.allclose(r, torch.ones_like(r), rtol=0, atol=1e-6):
        raise Mismatch(f"{what}: the output equals X, no noise was added\n  likely cause: "
                       "noise only when training is True (check the condition), sigma * eps "
                       "with eps standard normal")
    N = r.numel()
    cause = next((c for c, v in likely_mean.items()
                  if abs(r.mean().item() - v) <= Z * sigma / math.sqrt(N)
                  and abs(v - mean) > Z * sigma / math.sqrt(N)),
                 "the multiplicative noise should have mean 1: X * (1 + sigma * eps)")
    expect_stat(r.mean().item(), mean, sigma / math.sqrt(N), f"{what}: the mean of out / X",
                cause)
    for label, sel, likely in (("|x| near 0.5", ~big, likely_small),
                               ("|x| near 4", big, likely_big)):
        rs = r.reshape(-1)[sel.reshape(-1)]
        n = rs.numel()
        got = rs.var().item()
        se = var * math.sqrt(2 / (n - 1))
        cause = next((c for c, v in likely.items() if v is not None
                      and abs(got - v) <= Z * v * math.sqrt(2 / (n - 1))
                      and abs(v - var) > Z * se),
                     "out / X should vary with standard deviation sigma: X * (1 + sigma * eps), "
                     "eps standard normal")
        expect_stat(got, var, se, f"{what}: the variance of out / X where {label}", cause)
    frac = ((r - 1).abs() > 2 * sigma).double().mean().item()
    expect_stat(frac, tail, math.sqrt(tail * (1 - tail) / N),
                f"{what}: the fraction of |out / X - 1| above 2 sigma",
                "the noise is not Gaussian: eps must be standard normal (torch.randn), not "
                "uniform (torch.rand)")
    if M.shape[0] >= 2:
        k = M.shape[0] // 2 * 2
        prod = ((M[0:k:2] - 1) * (M[1:k:2] - 1)).mean().item()
        expect_stat(prod, 0.0, var / math.sqrt(M[0:k:2].numel()),
                    f"{what}: the mean of (r - 1)(r' - 1) for r, r' the ratios of an element "
                    "and the one below it (independent draws: 0)",
                    "the noise is shared between examples: draw it with X's full shape")


@CHAPTER.visible("gaussian_noise_layer", points=1)
def visible_gaussian_noise_layer(t, fn):
    with t.case("worked example: X (200, 100) float32, sigma = 0.5, training: out / X has mean "
                "1 and standard deviation 0.5, whatever the size of x", weight=2):
        noise_case(t, fn, (200, 100), 0.5, torch.float32, 0)
    with t.case("training=False returns X's values"):
        noise_eval_case(t, fn, _inputs((3, 4), 1, torch.float32), 0.5)
