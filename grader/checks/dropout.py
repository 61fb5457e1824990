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
