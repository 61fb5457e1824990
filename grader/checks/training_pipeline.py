"""09_training_pipeline: the visible checks (worked examples) of each exercise.

Public: this module ships to students. The models, loaders, losses and optimizers handed to
the student's functions are built inside the kernel (`grader.probes.training_pipeline`), and
what happened there comes back as plain data: the model's mode and grad state at every forward
pass, whether a batch reached the model without being moved, the parameters afterwards. The
values they are compared with come from `t.ref` (a reference run from the same start) and what
the likely mistakes give from `t.likely`; the references and the hidden checks are the
instructor's (`grader.chapters.training_pipeline`).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils import data

from grader.cases import gen
from grader.feedback import Mismatch, expect_close, fmt_number, type_name
from grader.registry import Chapter
from grader.remote import Handle, is_instance

CHAPTER = Chapter("09_training_pipeline", "The PyTorch training pipeline and its classic bugs")

CPU = torch.device("cpu")
LOSS_TOL = dict(atol=1e-5, rtol=1e-4)


# --- inputs -----------------------------------------------------------------------------------

def classification(n: int, d: int, c: int, seed: int):
    """X (n, d) float32 and labels y (n,) int64 in [0, c)."""
    g = gen(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64).to(torch.float32)
    y = torch.randint(0, c, (n,), generator=g)
    return X, y


def init_state(spec: list, seed: int) -> dict:
    """Parameters for the Linear layers of a layer list, drawn like nn.Linear's own
    (uniform in ±1/sqrt(fan_in)), from a seeded generator."""
    g = gen(seed)
    state = {}
    for i, (name, args, _) in enumerate(spec):
        if name == "Linear":
            fan_in, fan_out = args
            bound = 1 / math.sqrt(fan_in)
            state[f"{i}.weight"] = (torch.rand(fan_out, fan_in, generator=g) * 2 - 1) * bound
            state[f"{i}.bias"] = (torch.rand(fan_out, generator=g) * 2 - 1) * bound
    return state


# --- judging helpers --------------------------------------------------------------------------

def kind_of(x) -> str:
    return x.type_name if isinstance(x, Handle) else type_name(x)


def as_number(x, what: str) -> float:
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        x = x.item()
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise Mismatch(f"{what} should return a number, but returned {kind_of(x)}"
                       + ("\n  likely cause: the function has no `return` statement"
                          if x is None else ""))
    return float(x)


def close(a: float, b: float, atol: float, rtol: float) -> bool:
    return abs(a - b) <= atol + rtol * abs(b)


def snapshot(t, model, what: str) -> dict:
    snap = t.build("training_pipeline.snapshot", model)
    if type(snap) is not dict or "error" in snap:
        raise Mismatch(f"{what}: the model could not be read back afterwards "
                       f"({snap.get('error') if type(snap) is dict else 'no answer'})")
    return snap


def flat_state(state: dict, keys) -> torch.Tensor | None:
    """The parameters in `keys`' order as one vector (None if they do not fit)."""
    try:
        return torch.cat([state[k].detach().reshape(-1).double() for k in keys])
    except (KeyError, AttributeError, RuntimeError, TypeError):
        return None


def same_state(got: dict, expected: dict) -> bool:
    a, b = flat_state(got, expected), flat_state(expected, expected)
    return a is not None and a.shape == b.shape and torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def largest_difference(got: dict, expected: dict) -> str:
    a, b = flat_state(got, expected), flat_state(expected, expected)
    if a is None or a.shape != b.shape:
        return "the parameters do not match the model's layers"
    return f"largest difference {fmt_number((a - b).abs().max().item())}"


def state_cause(got: dict, likely: dict, default: str) -> str:
    for cause, value in likely.items():
        if type(value) is dict and type(value.get("state")) is dict and \
                same_state(got, value["state"]):
            return cause
    return default


def number_cause(got: float, expected: float, candidates: dict, atol: float,
                 rtol: float) -> str | None:
    """The first likely mistake whose value (different from the expected one) matches `got`."""
    for cause, value in candidates.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and \
                not close(value, expected, atol, rtol) and close(got, value, atol, rtol):
            return cause
    return None


# --- ArrayDataset -----------------------------------------------------------------------------

def _item_indices(n: int) -> list[int]:
    return sorted({0, n // 2, n - 1})


def dataset_case(t, cls, X, Y, what):
    n = len(X)
    indices = _item_indices(n)
    expected = t.ref("_dataset_items", X, Y, indices)
    ds = t.call(cls, X, Y, what=what)
    if not is_instance(ds, data.Dataset):
        raise Mismatch(f"{what} should be a torch.utils.data.Dataset, but is {kind_of(ds)}\n"
                       "  likely cause: the class does not subclass torch.utils.data.Dataset")
    length = t.call(len, ds, what=f"len({what})")
    if length != n:
        raise Mismatch(f"len({what}) is {length}, expected {n} (the number of examples)")
    for i, (ex, ey) in zip(indices, expected):
        item = t.call(lambda i=i: ds.method("__getitem__", i), what=f"{what}[{i}]")
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise Mismatch(f"{what}[{i}] should be a pair (x, y), but is {kind_of(item)}")
        x, y = item
        if not isinstance(x, torch.Tensor):
            raise Mismatch(f"{what}[{i}][0] should be a torch.Tensor, but is {kind_of(x)}")
        if x.shape != ex.shape:
            cause = ("unflattened items: return X[i].reshape(-1), a vector of "
                     f"{ex.numel()} features" if x.numel() == ex.numel() else
                     "the item is not the i-th example")
            raise Mismatch(f"{what}[{i}][0] has shape {tuple(x.shape)}, expected "
                           f"{tuple(ex.shape)}\n  likely cause: {cause}")
        if x.dtype != ex.dtype:
            raise Mismatch(f"{what}[{i}][0] has dtype {x.dtype}, expected {ex.dtype}\n"
                           "  likely cause: the features are not converted (.float(), or "
                           "torch.tensor(..., dtype=torch.float32)); nn.Linear's weights are "
                           "float32")
        if not torch.equal(x, ex):
            raise Mismatch(f"{what}[{i}][0] has wrong values: expected {ex[:6].tolist()}..., "
                           f"received {x.reshape(-1)[:6].tolist()}...\n  likely cause: not "
                           "the i-th example, or the values were rescaled")
        label = int(ey)
        if isinstance(y, float) or (isinstance(y, torch.Tensor) and y.is_floating_point()):
            raise Mismatch(f"{what}[{i}][1] is a float label ({fmt_number(float(y))}); "
                           "expected an int64 class index\n  likely cause: float labels: "
                           "nn.CrossEntropyLoss needs int64 class indices (.long(), "
                           "dtype=torch.int64)")
        if isinstance(y, torch.Tensor):
            if y.dtype != ey.dtype or y.numel() != 1:
                raise Mismatch(f"{what}[{i}][1] is a tensor of dtype {y.dtype} and shape "
                               f"{tuple(y.shape)}; expected an int64 scalar (0-d) class index"
                               "\n  likely cause: convert with .long() (cross-entropy needs "
                               "int64), and index one label")
            y = y.item()
        if not isinstance(y, int) or isinstance(y, bool) or y != label:
            raise Mismatch(f"{what}[{i}][1] is {y if not isinstance(y, Handle) else kind_of(y)}"
                           f", expected the label {label}")
    features = expected[0][0].numel()
    b = min(4, n)
    loader = t.build("training_pipeline.dataloader", ds, 4)
    batches = t.call(lambda: loader.to_list(limit=10000), what=f"a DataLoader over {what}")
    batch = batches[0] if batches else None
    if not (isinstance(batch, list | tuple) and len(batch) == 2
            and isinstance(batch[0], torch.Tensor) and isinstance(batch[1], torch.Tensor)
            and batch[0].shape == (b, features) and batch[1].shape == (b,)
            and batch[1].dtype == torch.int64):
        raise Mismatch(f"a DataLoader over {what} should give batches X of shape "
                       f"({b}, {features}) and y of shape ({b},) int64")


@CHAPTER.visible("ArrayDataset", points=2)
def visible_ArrayDataset(t, ArrayDataset_):
    with t.case("worked example: 6 images (1, 3, 3) in float64, labels int32"):
        X = torch.linspace(0, 1, 54, dtype=torch.float64).reshape(6, 1, 3, 3)
        Y = torch.tensor([0, 1, 2, 1, 0, 2], dtype=torch.int32)
        dataset_case(t, ArrayDataset_, X, Y, "ArrayDataset(X (6, 1, 3, 3), Y (6,))")


# --- build_model ------------------------------------------------------------------------------

def _short(path: str) -> str:
    return path.rsplit(".", 1)[-1]


def _describe(layers) -> str:
    return "[" + ", ".join(f"{_short(p)}({a}, {b})" if a is not None else _short(p)
                           for p, a, b in layers) + "]"


def _layers_of(t, model, what) -> list[tuple]:
    """(type path, in_features, out_features) of each child of the student's model."""
    def read():
        out = []
        for m in model.method("children").to_list(limit=1000):
            if is_instance(m, nn.Linear):
                out.append((kind_of(m), m.in_features, m.out_features))
            else:
                out.append((kind_of(m), None, None))
        return out
    return t.call(read, what=f"the layers of {what}")


def model_case(t, fn, sizes):
    what = f"build_model({sizes})"
    expected = [tuple(e) for e in t.ref("_layer_list", list(sizes))]
    model = t.call(fn, list(sizes), what=what)
    if not is_instance(model, nn.Sequential):
        raise Mismatch(f"{what} should return an nn.Sequential, but returned {kind_of(model)}")
    got = _layers_of(t, model, what)
    if got != expected:
        linear, relu = expected[0][0], next((p for p, _, _ in expected if p != expected[0][0]),
                                            None)
        n_linear = sum(p == linear for p, _, _ in expected)
        n_relu = sum(p == relu for p, _, _ in expected) if relu else 0
        got_linear = sum(p == linear for p, _, _ in got)
        got_relu = sum(p == relu for p, _, _ in got) if relu else 0
        if got and got[-1][1] is None and got[:-1] == expected:
            cause = ("ReLU after the last layer: the output layer gives logits (any real "
                     "number); no activation after it")
        elif got_linear == n_linear and got_relu == n_relu and len(got) == len(expected):
            cause = ("layers out of order: nn.Sequential applies its layers in the order given; "
                     "collect them in a list (a set does not keep the order)")
        elif got_relu < n_relu:
            cause = "a ReLU is missing between two Linear layers (without it, they collapse " \
                    "into one linear map)"
        else:
            cause = "the layers do not follow layer_sizes"
        raise Mismatch(f"{what} has layers {_describe(got)}, expected {_describe(expected)}\n"
                       f"  likely cause: {cause}")
    X = torch.randn(3, sizes[0], generator=gen(len(sizes)))
    out = t.call(model, X, what=f"{what} applied to X of shape (3, {sizes[0]})")
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (3, sizes[-1]):
        raise Mismatch(f"{what} applied to X (3, {sizes[0]}) should give shape (3, {sizes[-1]})")


@CHAPTER.visible("build_model", points=2)
def visible_build_model(t, build_model_):
    with t.case("worked example: build_model([4, 8, 3])"):
        model_case(t, build_model_, [4, 8, 3])


# --- train_one_epoch --------------------------------------------------------------------------

NOT_MOVED = ("`X.to(device)` returns a new tensor and leaves X where it was: assign it, "
             "X, y = X.to(device), y.to(device)")
OLD_GRADIENTS = ("the gradients were not reset before the first backward (the model came with "
                 "old gradients): call optimizer.zero_grad() before backward, not only after "
                 "the step")


def _records(t, watch, what) -> list[dict]:
    records = t.call(lambda: watch.method("records"), what=f"the forward passes of {what}")
    t.call(lambda: watch.method("remove"), what=f"the forward passes of {what}")
    if type(records) is not list or not all(type(r) is dict for r in records):
        raise Mismatch(f"{what}: the forward passes of the model could not be read back")
    return records


def train_case(t, fn, spec, state, X, y, batch_size, lr=0.5, momentum=0.0, stale=False):
    """One epoch of `fn` on a model handed over in evaluation mode, against a reference run."""
    inputs = (spec, state, X, y, batch_size, lr, momentum, stale)
    expected = t.ref("_epoch_run", *inputs)
    likely = t.likely("_epoch_run", *inputs)
    n = len(X)
    model = t.build("sequential", spec, state, False)  # the function must call train() itself
    if stale:
        t.build("training_pipeline.set_grads", model, 0.5)
    watch = t.build("training_pipeline.watch", model)
    criterion = t.build("training_pipeline.criterion")
    optimizer = t.build("optimizer", "SGD", model, lr=lr, momentum=momentum)
    loader = t.build("training_pipeline.loader", X, y, batch_size)
    what = (f"train_one_epoch(model, loader of {n} examples in batches of {batch_size}, "
            "criterion, optimizer, device)")
    got = t.call(fn, model, loader, criterion, optimizer, CPU, what=what)
    records = _records(t, watch, what)
    loss = as_number(got, what)
    n_batches = math.ceil(n / batch_size)
    if len(records) != n_batches:
        raise Mismatch(f"{what} ran the model {len(records)} times, expected once per batch "
                       f"({n_batches})")
    if not all(r["training"] for r in records):
        raise Mismatch(f"{what}: the model was in evaluation mode during training (it was "
                       "handed over in evaluation mode)\n  likely cause: no train(): call "
                       "model.train() first (dropout and batch norm behave differently in "
                       "training)")
    if any(r["unmoved"] for r in records) or criterion.unmoved:
        raise Mismatch(f"{what}: a batch reached the model (or the loss) without being moved to "
                       f"`device`\n  likely cause: {NOT_MOVED}")
    after = snapshot(t, model, what)["state"]
    if not same_state(after, expected["state"]):
        cause = state_cause(after, likely, OLD_GRADIENTS if stale else
                            "the parameters were not updated by optimizer.step() once per batch")
        raise Mismatch(f"{what}: the parameters after the epoch differ from one SGD step per "
                       f"batch ({largest_difference(after, expected['state'])})"
                       f"\n  likely cause: {cause}")
    losses = {c: v.get("loss") for c, v in likely.items() if type(v) is dict}
    expect_close(loss, expected["loss"], what=f"the mean loss per example returned by {what}",
                 **LOSS_TOL, cause=number_cause(loss, expected["loss"], losses, **LOSS_TOL))


@CHAPTER.visible("train_one_epoch", points=3)
def visible_train_one_epoch(t, train_one_epoch_):
    spec = [("Linear", [3, 5], {}), ("ReLU", [], {}), ("Linear", [5, 2], {})]
    X, y = classification(10, 3, 2, 0)
    with t.case("worked example: 10 examples in batches of 4 (the last has 2), a model handed "
                "over in evaluation mode"):
        train_case(t, train_one_epoch_, spec, init_state(spec, 0), X, y, 4)


# --- evaluate_accuracy ------------------------------------------------------------------------

def accuracy_case(t, fn, spec, state, X, y, batch_size, training):
    inputs = (spec, state, X, y, batch_size)
    expected = t.ref("_accuracy_run", *inputs)
    likely = t.likely("_accuracy_run", *inputs)
    n = len(X)
    model = t.build("sequential", spec, state, training)
    watch = t.build("training_pipeline.watch", model)
    loader = t.build("training_pipeline.loader", X, y, batch_size)
    mode = "training" if training else "evaluation"
    what = (f"evaluate_accuracy(model in {mode} mode, loader of {n} examples in batches of "
            f"{batch_size}, device)")
    got = t.call(fn, model, loader, CPU, what=what)
    records = _records(t, watch, what)
    acc = as_number(got, what)
    if not records:
        raise Mismatch(f"{what} never ran the model")
    if any(r["training"] for r in records):
        raise Mismatch(f"{what}: the model was in training mode while evaluating\n  likely "
                       "cause: no eval(): call model.eval() first (dropout is active in "
                       "training mode, so predictions are random)")
    if any(r["grad_enabled"] for r in records):
        raise Mismatch(f"{what}: autograd recorded the forward passes\n  likely cause: wrap "
                       "the loop in `with torch.no_grad():` (it saves memory and time)")
    if any(r["unmoved"] for r in records):
        raise Mismatch(f"{what}: a batch reached the model without being moved to `device`\n"
                       "  likely cause: `X.to(device)` returns a new tensor; assign it")
    snap = snapshot(t, model, what)
    if snap["training"] != training:
        now = "training" if snap["training"] else "evaluation"
        raise Mismatch(f"{what}: afterwards the model is in {now} mode, but it was in {mode} "
                       "mode before\n  likely cause: mode not restored: remember model.training "
                       "first and call model.train(was_training) at the end")
    if any(not torch.equal(snap["state"].get(k, torch.empty(0)), v) for k, v in state.items()):
        raise Mismatch(f"{what} changed the model's parameters")
    expect_close(acc, expected, what=what, atol=1e-6,
                 cause=number_cause(acc, expected, likely, atol=1e-6, rtol=0.0))


@CHAPTER.visible("evaluate_accuracy", points=2, d2l=("evaluate_accuracy_gpu",))
def visible_evaluate_accuracy(t, evaluate_accuracy_):
    spec = [("Linear", [3, 6], {}), ("Dropout", [0.5], {}), ("ReLU", [], {}),
            ("Linear", [6, 3], {})]
    X, y = classification(10, 3, 3, 0)
    with t.case("worked example: 10 examples in batches of 4, a model with dropout in "
                "training mode"):
        accuracy_case(t, evaluate_accuracy_, spec, init_state(spec, 0), X, y, 4, training=True)


# --- train_with_validation --------------------------------------------------------------------

KEYS = ("train_loss", "valid_loss", "valid_acc")


def _history(got, num_epochs: int, what: str) -> list[dict]:
    if not isinstance(got, list | tuple):
        cause = ("the function has no `return` statement" if got is None else
                 "only the last epoch's dict: collect one dict per epoch in a list (append "
                 "after each validation pass) and return the list" if type(got) is dict else
                 None)
        raise Mismatch(f"{what} should return a list with one dict per epoch, but returned "
                       f"{kind_of(got)}" + (f"\n  likely cause: {cause}" if cause else ""))
    if len(got) != num_epochs:
        raise Mismatch(f"{what} returned a list of {len(got)} items, expected one dict per "
                       f"epoch ({num_epochs})\n  likely cause: append one dict after each "
                       "epoch's validation pass (and return the list after the loop)")
    for e, entry in enumerate(got):
        if type(entry) is not dict:
            raise Mismatch(f"{what}: item {e} of the list is {kind_of(entry)}, expected a dict "
                           f"with keys {', '.join(map(repr, KEYS))}")
        missing = [k for k in KEYS if k not in entry]
        if missing:
            raise Mismatch(f"{what}: the dict of epoch {e} has no key "
                           f"{', '.join(map(repr, missing))} (it has "
                           f"{', '.join(map(repr, entry)) or 'none'})")
        for k in KEYS:
            v = entry[k]
            if isinstance(v, bool) or not isinstance(v, float):
                if isinstance(v, torch.Tensor) or isinstance(v, Handle):
                    cause = ("floats in the dicts: convert with .item() (a tensor also keeps "
                             "its device and, for a loss, its whole computation graph)")
                elif k == "valid_acc" and isinstance(v, int):
                    cause = ("valid_acc is the number of correct predictions, not the fraction: "
                             "divide by the number of examples")
                else:
                    cause = "floats in the dicts: convert with float()"
                raise Mismatch(f"{what}: {k!r} of epoch {e} is {kind_of(v)}, expected a Python "
                               f"float\n  likely cause: {cause}")
    return list(got)


def _judge_passes(records: list[dict], n_train: int, n_valid: int, num_epochs: int, what: str):
    """Training forward passes in training mode with autograd, validation ones in evaluation
    mode without; no parameter changes during (or right after) a validation pass."""
    # an extra evaluation pass over the training data (eval mode, no autograd) is allowed
    train = [r for r in records if r["phase"] == "train"
             and (r["training"] or r["grad_enabled"])]
    valid = [r for r in records if r["phase"] == "valid"]
    if len(train) != n_train * num_epochs:
        raise Mismatch(f"{what} ran the model {len(train)} times on training batches, expected "
                       f"once per batch and epoch ({n_train} x {num_epochs})")
    if len(valid) < n_valid * num_epochs:
        raise Mismatch(f"{what} ran the model {len(valid)} times on validation batches, "
                       f"expected at least once per batch and epoch ({n_valid} x {num_epochs})"
                       "\n  likely cause: one pass over valid_loader after each epoch's training")
    for i, r in enumerate(train):
        if not r["training"]:
            epoch = i // n_train
            cause = ("no train(): the model was handed over in evaluation mode; call "
                     "model.train() at the start of every epoch" if epoch == 0 else
                     "model.train() only once: the validation pass of the previous epoch left "
                     "the model in evaluation mode; call model.train() at the start of every "
                     "epoch")
            raise Mismatch(f"{what}: the model was in evaluation mode while training in epoch "
                           f"{epoch}\n  likely cause: {cause}")
        if not r["grad_enabled"]:
            raise Mismatch(f"{what}: autograd was off while training in epoch {i // n_train}\n"
                           "  likely cause: the training pass runs inside torch.no_grad()")
    if any(r["training"] for r in valid):
        raise Mismatch(f"{what}: the model was in training mode during the validation pass\n"
                       "  likely cause: no eval() for the validation pass: call model.eval() "
                       "before it (dropout and batch norm behave differently in training)")
    if any(r["grad_enabled"] for r in valid):
        raise Mismatch(f"{what}: autograd recorded the forward passes of the validation pass\n"
                       "  likely cause: wrap the validation pass in `with torch.no_grad():` "
                       "(nothing is learnt there; it only costs memory and time)")
    if any(r["unmoved"] for r in records):
        raise Mismatch(f"{what}: a batch reached the model without being moved to `device`\n"
                       f"  likely cause: {NOT_MOVED}")
    for prev, r in zip(records, records[1:]):
        if prev["phase"] == "valid" and prev["params"] != r["params"]:
            raise Mismatch(f"{what}: the parameters changed during the validation pass\n"
                           "  likely cause: an optimizer step in the validation pass: only "
                           "training batches update the model (no backward() or "
                           "optimizer.step() on validation data)")


def validation_case(t, fn, spec, state, data_, batch_sizes, num_epochs, lr=0.5, momentum=0.0):
    """`fn` for `num_epochs` epochs on a model handed over in evaluation mode, against a
    reference run from the same start. data_ = (X_train, y_train, X_valid, y_valid)."""
    X_train, y_train, X_valid, y_valid = data_
    train_bs, valid_bs = batch_sizes
    inputs = (spec, state, X_train, y_train, X_valid, y_valid, train_bs, valid_bs, num_epochs,
              lr, momentum)
    expected = t.ref("_validation_run", *inputs)
    likely = t.likely("_validation_run", *inputs)
    model = t.build("sequential", spec, state, False)
    tracker = t.build("training_pipeline.tracker")
    watch = t.build("training_pipeline.watch", model, tracker)
    train_loader = t.build("training_pipeline.loader", X_train, y_train, train_bs, tracker,
                           "train")
    valid_loader = t.build("training_pipeline.loader", X_valid, y_valid, valid_bs, tracker,
                           "valid")
    criterion = t.build("training_pipeline.criterion")
    optimizer = t.build("optimizer", "SGD", model, lr=lr, momentum=momentum)
    what = (f"train_with_validation(model, train_loader ({len(X_train)} examples in batches of "
            f"{train_bs}), valid_loader ({len(X_valid)} in batches of {valid_bs}), criterion, "
            f"optimizer, num_epochs={num_epochs}, device)")
    got = t.call(fn, model, train_loader, valid_loader, criterion, optimizer, num_epochs, CPU,
                 what=what)
    records = _records(t, watch, what)
    history = _history(got, num_epochs, what)
    _judge_passes(records, math.ceil(len(X_train) / train_bs),
                  math.ceil(len(X_valid) / valid_bs), num_epochs, what)
    if criterion.unmoved:
        raise Mismatch(f"{what}: labels reached the loss without being moved to `device`\n"
                       f"  likely cause: {NOT_MOVED}")
    snap = snapshot(t, model, what)
    if not snap["training"]:
        raise Mismatch(f"{what}: afterwards the model is in evaluation mode\n  likely cause: "
                       "model left in evaluation mode by the last validation pass: call "
                       "model.train() after it (the next user of the model expects to train)")
    if not same_state(snap["state"], expected["state"]):
        cause = state_cause(snap["state"], likely, "the parameters were not updated by one "
                            "optimizer.step() per training batch (and none elsewhere)")
        raise Mismatch(f"{what}: the parameters after training differ from one SGD step per "
                       f"training batch and epoch "
                       f"({largest_difference(snap['state'], expected['state'])})"
                       f"\n  likely cause: {cause}")
    for e, (entry, ref) in enumerate(zip(history, expected["history"])):
        for k in KEYS:
            tol = LOSS_TOL if k != "valid_acc" else dict(atol=1e-6, rtol=0.0)
            candidates = {c: v["history"][e][k] for c, v in likely.items()
                          if type(v) is dict and type(v.get("history")) is list}
            expect_close(entry[k], ref[k], what=f"{k!r} of epoch {e} returned by {what}", **tol,
                         cause=number_cause(entry[k], ref[k], candidates, **tol))


@CHAPTER.visible("train_with_validation", points=3)
def visible_train_with_validation(t, train_with_validation_):
    spec = [("Linear", [3, 5], {}), ("ReLU", [], {}), ("Linear", [5, 2], {})]
    X_train, y_train = classification(12, 3, 2, 0)
    X_valid, y_valid = classification(7, 3, 2, 1)
    with t.case("worked example: 2 epochs; 12 training examples in batches of 5 and 7 "
                "validation examples in batches of 3 (the last batches are smaller); a model "
                "handed over in evaluation mode"):
        validation_case(t, train_with_validation_, spec, init_state(spec, 0),
                        (X_train, y_train, X_valid, y_valid), (5, 3), 2)


# --- fix-the-bug exercises ----------------------------------------------------------------------
#
# Each runs the learner's fixed function inside the kernel through a probe
# (`grader.probes.training_pipeline.BugProbe`), which reports what happened as a dict of
# observations; the reference's observations on the same inputs come from t.ref, and those of the
# known mistakes (the original bug first) from t.likely. A difference is reported for the first
# observation that differs, naming the mistake whose observations the answer shares.

from grader import cases  # noqa: E402
from grader.remote import StudentError, scrub  # noqa: E402
from grader.runner import known_cause  # noqa: E402

DEFAULT_TOL = dict(atol=1e-5, rtol=1e-4)


def agree(a, b, tol: dict | None = None) -> bool:
    """Whether the observation `a` is `b` (tensors: dtype, shape, values within `tol`)."""
    tol = tol or DEFAULT_TOL
    if isinstance(b, torch.Tensor):
        if not isinstance(a, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
            return False
        if not b.is_floating_point():
            return torch.equal(a, b)
        return torch.allclose(a.double(), b.double(), equal_nan=True, **tol)
    if type(b) is float:
        if type(a) not in (float, int):
            return False
        return (math.isnan(a) and math.isnan(b)) or (a == b) or (
            math.isfinite(a) and math.isfinite(b) and close(a, b, **tol))
    if type(b) in (list, tuple):
        return type(a) is type(b) and len(a) == len(b) and all(
            agree(x, y, tol) for x, y in zip(a, b))
    if type(b) is dict:
        return type(a) is dict and a.keys() == b.keys() and all(
            agree(a[k], b[k], tol) for k in b)
    return type(a) is type(b) and a == b


def _short_error(text) -> str:
    """The first line of an error, without the class that raised it (so that the learner's class
    and the one that showed the mistake compare equal)."""
    import re
    line = scrub(str(text)).splitlines()[0] if text else ""
    return re.sub(r"\b\w+\.(__\w+__)", r"\1", line)[:70]


def show(v, limit: int = 6) -> str:
    if isinstance(v, torch.Tensor):
        flat = v.detach().reshape(-1).double()
        vals = ", ".join(fmt_number(x) for x in flat[:limit].tolist())
        more = ", ..." if flat.numel() > limit else ""
        return f"tensor {tuple(v.shape)} {str(v.dtype).replace('torch.', '')} [{vals}{more}]"
    if type(v) is float:
        return fmt_number(v)
    if type(v) is list:
        if v and all(isinstance(x, torch.Tensor) or x is None for x in v):
            return "[" + "; ".join(show(x, 3) if x is not None else "None" for x in v[:4]) + (
                "; ..." if len(v) > 4 else "") + "]"
        return "[" + ", ".join(show(x, 3) for x in v[:8]) + (", ..." if len(v) > 8 else "") + "]"
    return repr(v)


def _signature(got: dict, expected: dict, obs, tol: dict, loose) -> int:
    """How many observations of a mistake (`obs`) that differ from the expected ones the answer
    shares (0 unless it shares all of them). Loose observations (which depend on random draws)
    count only for a mistake that differs in nothing else."""
    if type(obs) is not dict or obs.get("error"):
        return 0
    differ = [k for k in expected if k != "error"
              and not agree(obs.get(k), expected[k], tol.get(k))]
    keys = [k for k in differ if k not in loose] or differ
    return len(keys) if keys and all(agree(got.get(k), obs.get(k), tol.get(k))
                                     for k in keys) else 0


def best_cause(got: dict, expected: dict, likely: dict, tol: dict | None = None,
               loose=()) -> str | None:
    """The likely mistake that explains most of the answer's differences."""
    scores = [(_signature(got, expected, obs, tol or {}, loose), c) for c, obs in likely.items()]
    best = max((s for s, _ in scores), default=0)
    return next((c for s, c in scores if s == best), None) if best else None


def judge(got, expected: dict, likely: dict, what: str, labels: dict, hints: dict,
          tol: dict | None = None, loose=()) -> None:
    """Compare observations key by key (in `expected`'s order); name the likely mistake."""
    tol = tol or {}
    if type(got) is not dict:
        raise Mismatch(f"{what}: what happened could not be read back")
    err = got.get("error")
    if err and not expected.get("error"):
        short = _short_error(err)
        cause = next((c for c, obs in likely.items() if type(obs) is dict and obs.get("error")
                      and _short_error(obs["error"]) == short), None)
        raise Mismatch(f"{what} raised {scrub(str(err))}"
                       + (f"\n  likely cause: {cause}" if cause else known_cause(str(err))))
    for k in expected:
        if k == "error" or agree(got.get(k), expected[k], tol.get(k)):
            continue
        cause = best_cause(got, expected, likely, tol, loose) or hints.get(k)
        raise Mismatch(f"{what}: {labels.get(k, k)}: expected {show(expected[k])}, received "
                       f"{show(got.get(k))}" + (f"\n  likely cause: {cause}" if cause else ""))


def probe_run(t, method: str, fn, *args, what: str) -> dict:
    probe = t.build("training_pipeline.bug_probe")
    return t.call(lambda: probe.method(method, fn, *args), what=what)


def plain_run(t, fn, *args, what: str) -> dict:
    """{"error": None, "value": fn(*args)}, or {"error": what it raised}."""
    try:
        return {"error": None, "value": t.call(fn, *args, what=what)}
    except StudentError as exc:
        raised = exc.report.get("raised") or {}
        return {"error": f"{raised.get('type', 'Exception')}: {raised.get('message', '')}"}


MODE_LABELS = {
    "forward_training": "the model's mode at each forward pass (True: training mode, dropout on)",
    "forward_grad": "whether autograd recorded each forward pass",
    "unmoved": "a batch reached the model without being moved to `device`",
    "returns": "the type returned",
    "requires_grad": "result.requires_grad (True: the result carries a computation graph)",
    "training_after": "the model's mode afterwards (True: training)",
}
MODE_HINTS = {
    "forward_training": "no eval(): call model.eval() before the forward pass (dropout and batch "
                        "norm behave differently in training mode)",
    "forward_grad": "the forward pass ran with autograd recording: wrap it in "
                    "`with torch.no_grad():`",
    "unmoved": NOT_MOVED,
    "training_after": "mode not restored: remember was_training = model.training first and call "
                      "model.train(was_training) at the end",
}


# a. predict: eval() does not turn off autograd

def predict_case(t, fn, spec, state, training: bool, X, seed: int = 0):
    inputs = (spec, state, training, X, seed)
    expected = t.ref("_obs_predict", *inputs)
    likely = t.likely("_obs_predict", *inputs)
    mode = "training" if training else "evaluation"
    what = f"predict(model in {mode} mode, X of shape {tuple(X.shape)})"
    got = probe_run(t, "predict", fn, *inputs, what=what)
    judge(got, expected, likely, what, {**MODE_LABELS, "output": "the predictions"},
          {**MODE_HINTS, "requires_grad": "run the forward pass inside `with torch.no_grad():`",
           "output": "return model(X) (the logits) unchanged"}, loose=("output",))


@CHAPTER.visible("predict", points=1)
def visible_predict(t, predict_):
    spec = [("Linear", [4, 6], {}), ("Dropout", [0.5], {}), ("ReLU", [], {}),
            ("Linear", [6, 3], {})]
    with t.case("worked example: a model with dropout in training mode, X (5, 4)"):
        predict_case(t, predict_, spec, init_state(spec, 40), True,
                     torch.randn(5, 4, generator=gen(40)))


# b. two losses from one forward pass

def two_losses_case(t, fn, spec, state, X, y, stale: bool = False):
    inputs = (spec, state, X, y, stale)
    expected = t.ref("_obs_two_losses", *inputs)
    likely = t.likely("_obs_two_losses", *inputs)
    what = (f"backward_two_losses(model, X of shape {tuple(X.shape)}, y)"
            + (" on a model whose .grad already holds gradients" if stale else ""))
    got = probe_run(t, "two_losses", fn, *inputs, what=what)
    judge(got, expected, likely, what,
          {"returns": "the type returned", "losses": "(data_loss, size_loss)",
           "forward_passes": "the number of forward passes through the model",
           "grads": "the parameters' .grad afterwards"},
          {"returns": "return the two losses as Python floats: data_loss.item(), "
                      "size_loss.item()",
           "forward_passes": "one forward pass: y_hat = model(X) once, both losses from it",
           "grads": "the gradients of both losses must be added to .grad: "
                    "(data_loss + size_loss).backward()"})


@CHAPTER.visible("backward_two_losses", points=1)
def visible_backward_two_losses(t, backward_two_losses_):
    spec = [("Linear", [3, 4], {}), ("Tanh", [], {}), ("Linear", [4, 1], {})]
    with t.case("worked example: X (6, 3), y (6, 1), a model with fresh gradients"):
        two_losses_case(t, backward_two_losses_, spec, init_state(spec, 41),
                        torch.randn(6, 3, generator=gen(41)), torch.randn(6, 1, generator=gen(42)))


# c. a new order every epoch

def orders_case(t, fn, n: int, num_epochs: int, seed: int, stats: bool = False):
    inputs = (n, num_epochs, seed)
    expected = t.ref("_obs_orders", *inputs)
    likely = t.likely("_obs_orders", *inputs)
    what = f"epoch_orders({n}, {num_epochs}, generator)"
    got = probe_run(t, "orders", fn, *inputs, what=what)
    expected = {k: v for k, v in expected.items() if k != "stats"}
    judge(got, expected, likely, what,
          {"returns": "what was returned", "epochs": "the number of orders",
           "permutations": "every order is a permutation of 0..n-1",
           "in_index_order": "every order is 0, 1, ..., n-1 (no shuffling)",
           "new_order_every_epoch": "a different order in every epoch",
           "same_with_same_generator_seed": "two calls with generators of the same seed agree "
                                            "(the global random generator seeded differently)"},
          {"returns": "return a list with one order (a list or tensor of indices) per epoch",
           "epochs": "one order per epoch",
           "permutations": "draw each order with torch.randperm(n, generator=generator)"})
    if stats:
        p = t.ref("_order_probabilities", n)
        counts, follows = got["stats"]["position_of_0"], got["stats"]["1_right_after_0"]
        for i, c in enumerate(counts):
            cases.expect_stat(c / num_epochs, p["position"], math.sqrt(
                p["position"] * (1 - p["position"]) / num_epochs),
                f"{what}: the share of epochs where example 0 comes at position {i}",
                "every order must be uniformly random: torch.randperm(n, generator=generator)")
        cases.expect_stat(follows / num_epochs, p["follows"], math.sqrt(
            p["follows"] * (1 - p["follows"]) / num_epochs),
            f"{what}: the share of epochs where example 1 comes right after example 0",
            "the orders are not independent uniform permutations (a shifted or rotated order?)")


@CHAPTER.visible("epoch_orders", points=1)
def visible_epoch_orders(t, epoch_orders_):
    with t.case("worked example: 10 examples, 4 epochs"):
        orders_case(t, epoch_orders_, 10, 4, 43)


# d. clamp's zero gradient

def log_loss_case(t, fn, preds, labels):
    inputs = (preds, labels)
    expected = t.ref("_obs_log_loss", *inputs)
    likely = t.likely("_obs_log_loss", *inputs)
    what = f"log_mse_loss(preds of shape {tuple(preds.shape)}, labels)"
    got = probe_run(t, "loss_and_grad", fn, *inputs, what=what)
    k = cases.tol(preds.dtype, 10.0)
    judge(got, expected, likely, what,
          {"returns": "the type returned", "value": "the loss",
           "grad": "the gradient of the loss with respect to preds"},
          {"returns": "return the loss as a 0-d tensor (the mean over the examples), still "
                      "attached to the graph (no .item()), in the dtype of preds",
           "value": "the mean over the examples of (f(p) - log(y))**2, with f(p) = log(p) for "
                    "p >= 1 and p - 1 below 1",
           "grad": "below 1, f(p) = p - 1 has slope 1: every prediction must get a gradient"},
          tol={"value": k, "grad": k})


@CHAPTER.visible("log_mse_loss", points=1)
def visible_log_mse_loss(t, log_mse_loss_):
    preds = torch.tensor([[150.0], [0.5], [2.0], [-3.0], [80.0]])
    labels = torch.tensor([[120.0], [100.0], [3.0], [50.0], [90.0]])
    with t.case("worked example: predictions 150, 0.5, 2, -3, 80 (two of them below 1)"):
        log_loss_case(t, log_mse_loss_, preds, labels)


# e. training on log prices

def log_price_case(t, fn, X, prices, lr: float, num_steps: int):
    inputs = (X, prices, lr, num_steps)
    expected = t.ref("_obs_fit_log_price", *inputs)
    likely = t.likely("_obs_fit_log_price", *inputs)
    what = f"fit_log_price(X of shape {tuple(X.shape)}, prices, lr={lr}, num_steps={num_steps})"
    got = plain_run(t, fn, *inputs, what=what)
    judge(got, expected, likely, what, {"value": "the fitted prices"},
          {"value": "gradient descent from w = 0, b = 0 on mean((X @ w + b - log(prices))**2), "
                    "then return torch.exp(X @ w + b), shape (n, 1)"},
          tol={"value": dict(atol=1e-3, rtol=2e-3)})


@CHAPTER.visible("fit_log_price", points=1)
def visible_fit_log_price(t, fit_log_price_):
    X = torch.randn(20, 3, generator=gen(44))
    prices = torch.exp(12 + X @ torch.tensor([[0.3], [-0.2], [0.1]])
                       + 0.05 * torch.randn(20, 1, generator=gen(45)))
    with t.case("worked example: 20 houses, 3 standardised features, prices around 160 000"):
        log_price_case(t, fit_log_price_, X, prices, 0.1, 40)


# f. a small initialisation

def init_case(t, fn, spec, nested: bool, seed: int):
    inputs = (spec, nested, seed)
    target = t.ref("_init_target")
    likely = t.likely("_obs_init", *inputs)
    sizes = [a[0] for n, a, _ in spec if n == "Linear"] + [spec[-1][1][1]]
    what = (f"init_small_(net) on an MLP {sizes} initialised with standard deviation 10"
            + (" (its first layer inside a nested nn.Sequential)" if nested else ""))
    got = probe_run(t, "init", fn, *inputs, what=what)
    if got.get("error"):
        judge(got, {"error": None}, likely, what, {}, {})
    for i, layer in enumerate(got["layers"]):
        judge_init_layer(layer, [obs["layers"][i] for obs in likely.values()
                                 if type(obs) is dict and not obs.get("error")],
                         [c for c, obs in likely.items()
                          if type(obs) is dict and not obs.get("error")],
                         target, f"{what}: the weight of Linear layer {i} {tuple(layer['shape'])}")


def judge_init_layer(layer: dict, others: list, causes: list, target: dict, where: str):
    """The weights' scale, mean and shape of distribution, the biases; `others` are what the
    likely mistakes (`causes`) left in the same layer."""
    def cause(test):
        return next((c for c, o in zip(causes, others) if test(o)), "")

    std, n, m2 = target["std"], layer["n"], layer["m2"]
    if not layer["changed"]:
        raise Mismatch(f"{where} was not changed\n  likely cause: "
                       + (cause(lambda o: not o["changed"]) or "change the weights in place "
                          "(nn.init.normal_(m.weight, 0, 0.01) on each nn.Linear of net)"))
    cases.expect_stat(math.sqrt(m2), std, std * math.sqrt(0.5 / n),
                      f"{where}: the root mean square of the weights",
                      cause(lambda o: o["changed"] and m2 > 0 and o["m2"] > 0
                            and abs(math.log(m2 / o["m2"])) < 0.5))
    cases.expect_stat(layer["mean"], 0.0, std / math.sqrt(n),
                      f"{where}: the mean of the weights", "draw with mean 0")
    cases.expect_stat(layer["kurtosis"], target["kurtosis"], math.sqrt(24 / n),
                      f"{where}: the kurtosis E[w^4]/E[w^2]^2 of the weights (3 for a normal "
                      "distribution)",
                      cause(lambda o: o["changed"] and abs(o["kurtosis"] - layer["kurtosis"])
                            < 0.3) or "draw from a normal distribution")
    if layer["bias_max"] > target["bias"]:
        raise Mismatch(f"{where.replace('weight', 'bias')} is not zero (largest magnitude "
                       f"{fmt_number(layer['bias_max'])})\n  likely cause: "
                       + (cause(lambda o: o["bias_max"] > 0) or "set the biases to zero"))


@CHAPTER.visible("init_small_", points=1)
def visible_init_small_(t, init_small__):
    spec = [("Linear", [64, 48], {}), ("ReLU", [], {}), ("Linear", [48, 10], {})]
    with t.case("worked example: an MLP [64, 48, 10]"):
        init_case(t, init_small__, spec, False, 46)


# g. Dataset method names

def window_case(t, cls, series, window: int):
    n = len(series) - window
    indices = sorted({0, max(n // 2, 0), max(n - 1, 0)})
    inputs = (series, window, indices)
    expected = t.ref("_obs_window", *inputs)
    likely = t.likely("_obs_window", *inputs)
    what = f"WindowDataset(series of length {len(series)}, window={window})"
    got = probe_run(t, "dataset", cls, *inputs, what=what)
    judge(got, expected, likely, what,
          {"is_dataset": "is a torch.utils.data.Dataset", "len": "len(dataset)",
           "items": f"the items {indices} (type, x, y)",
           "first_batch": "the first batch of a DataLoader(dataset, batch_size=4)"},
          {"is_dataset": "subclass torch.utils.data.Dataset",
           "len": "len(dataset) is len(series) - window: the number of complete windows",
           "items": "item i is (series[i:i + window], series[i + window])"})


@CHAPTER.visible("WindowDataset", points=1)
def visible_WindowDataset(t, WindowDataset_):
    with t.case("worked example: a series of 10 values, window 3"):
        window_case(t, WindowDataset_, torch.arange(10, dtype=torch.float32) ** 2, 3)


# h. parameters of several modules, in order

def parameters_case(t, fn, specs: list, ties: list):
    inputs = (specs, ties)
    expected = t.ref("_obs_parameters_once", *inputs)
    likely = t.likely("_obs_parameters_once", *inputs)
    what = (f"parameters_once({', '.join(f'module{i}' for i in range(len(specs)))})"
            + (f" ({len(ties)} tensor{'s' if len(ties) > 1 else ''} shared between modules)"
               if ties else ""))
    got = probe_run(t, "parameters_once", fn, *inputs, what=what)
    judge(got, expected, likely, what,
          {"returns": "the type returned",
           "all_parameters": "every parameter of every module, and nothing else",
           "each_once": "each tensor once", "in_order": "in the order the modules give them"},
          {"returns": "return a list", "in_order": "keep the order: module by module, each "
           "module's parameters() in turn"})


@CHAPTER.visible("parameters_once", points=1)
def visible_parameters_once(t, parameters_once_):
    first = [("Linear", [4, 3], {}), ("ReLU", [], {}), ("Linear", [3, 5], {})]
    second = [("Linear", [4, 3], {}), ("Tanh", [], {}), ("Linear", [3, 2], {})]
    with t.case("worked example: two modules of two Linear layers each; the first layer's "
                "weight is one tensor shared by both"):
        parameters_case(t, parameters_once_, [first, second], [[(0, "0.weight"),
                                                                 (1, "0.weight")]])


# i. moving a batch to the device

def _show_batch(d) -> str:
    if type(d) is not list or not d:
        return repr(d)
    if d[0] == "tensor":
        return f"tensor on {d[1]} {tuple(d[2])} {d[3]}"
    if d[0] in ("list", "tuple") and len(d) == 2:
        inner = ", ".join(_show_batch(x) for x in d[1])
        return f"[{inner}]" if d[0] == "list" else f"({inner}{',' if len(d[1]) == 1 else ''})"
    if d[0] == "dict" and len(d) == 2:
        return "{" + ", ".join(f"{k!r}: {_show_batch(v)}" for k, v in d[1]) + "}"
    if d[0] == "value":
        return repr(d[1])
    return d[0]


def to_device_case(t, fn, batch, device: str):
    inputs = (batch, device)
    expected = t.ref("_obs_to_device", *inputs)
    likely = t.likely("_obs_to_device", *inputs)
    what = f"to_device(batch, torch.device({device!r}))"
    got = probe_run(t, "to_device", fn, *inputs, what=what)
    if got.get("error") or agree(got.get("result"), expected["result"]):
        judge(got, expected, likely, what, {}, {})
        return
    cause = best_cause(got, expected, likely)
    raise Mismatch(f"{what}: expected {_show_batch(expected['result'])}, received "
                   f"{_show_batch(got.get('result'))}" + (
                       f"\n  likely cause: {cause}" if cause else
                       "\n  likely cause: the same structure (container types, keys, other "
                       "values) with every tensor replaced by tensor.to(device)"))


@CHAPTER.visible("to_device", points=1)
def visible_to_device(t, to_device_):
    batch = (torch.ones(2, 3), torch.tensor([0, 1]))
    with t.case("worked example: a pair (X, y) to the 'meta' device (tensors without data)"):
        to_device_case(t, to_device_, batch, "meta")


# j. one training step

STEP_LABELS = {"returns": "the type returned", "loss": "the loss returned", "steps":
               "the number of optimizer steps",
               "parameters": "the parameters afterwards"}


def train_step_case(t, fn, spec, state, X, y, lr: float, stale: bool = False):
    inputs = (spec, state, X, y, lr, stale)
    expected = t.ref("_obs_train_step", *inputs)
    likely = t.likely("_obs_train_step", *inputs)
    what = (f"train_step(model, X of shape {tuple(X.shape)}, y, nn.MSELoss(), SGD(lr={lr}))"
            + (" on a model whose .grad holds old gradients" if stale else ""))
    got = probe_run(t, "train_step", fn, *inputs, what=what)
    judge(got, expected, likely, what, STEP_LABELS,
          {"returns": "return loss.item(), a Python float",
           "parameters": "zero_grad, forward, loss, backward, step, in that order"})


@CHAPTER.visible("train_step", points=1)
def visible_train_step(t, train_step_):
    spec = [("Linear", [3, 4], {}), ("ReLU", [], {}), ("Linear", [4, 1], {})]
    with t.case("worked example: X (8, 3), y (8, 1)"):
        train_step_case(t, train_step_, spec, init_state(spec, 47),
                        torch.randn(8, 3, generator=gen(47)), torch.randn(8, 1, generator=gen(48)),
                        0.1)


# k. gradient accumulation

def accumulate_case(t, fn, spec, state, micro_batches, lr: float, stale: bool = False):
    inputs = (spec, state, micro_batches, lr, stale)
    expected = t.ref("_obs_accumulate", *inputs)
    likely = t.likely("_obs_accumulate", *inputs)
    sizes = [len(X) for X, _ in micro_batches]
    what = (f"accumulate_and_step(model, micro-batches of sizes {sizes}, nn.MSELoss(), "
            f"SGD(lr={lr}))" + (" on a model whose .grad holds old gradients" if stale else ""))
    got = probe_run(t, "accumulate", fn, *inputs, what=what)
    judge(got, expected, likely, what, STEP_LABELS,
          {"returns": "return the mean loss per example as a Python float",
           "steps": "one optimizer.step() after all the micro-batches",
           "loss": "the mean loss per example: weight each micro-batch's mean by its size",
           "parameters": "one step with the gradient of the mean loss over all the examples"})


@CHAPTER.visible("accumulate_and_step", points=1)
def visible_accumulate_and_step(t, accumulate_and_step_):
    spec = [("Linear", [3, 1], {})]
    g = gen(49)
    micro = [(torch.randn(4, 3, generator=g), torch.randn(4, 1, generator=g)),
             (torch.randn(2, 3, generator=g), torch.randn(2, 1, generator=g))]
    with t.case("worked example: micro-batches of 4 and 2 examples, a model whose .grad holds "
                "old gradients"):
        accumulate_case(t, accumulate_and_step_, spec, init_state(spec, 49), micro, 0.1, True)


# l. evaluation loss with dropout off

def eval_loss_case(t, fn, spec, state, X, y, batch_size: int, training: bool, seed: int = 0):
    inputs = (spec, state, X, y, batch_size, training, seed)
    expected = t.ref("_obs_eval_loss", *inputs)
    likely = t.likely("_obs_eval_loss", *inputs)
    mode = "training" if training else "evaluation"
    what = (f"evaluate_loss(model in {mode} mode, loader of {len(X)} examples in batches of "
            f"{batch_size}, nn.CrossEntropyLoss(), device)")
    got = probe_run(t, "eval_loss", fn, *inputs, what=what)
    judge(got, expected, likely, what,
          {**MODE_LABELS, "loss": "the mean loss per example",
           "parameters": "the parameters afterwards"},
          {**MODE_HINTS, "returns": "return a number (loss.item() sums)",
           "loss": "weight each batch's mean loss by its size and divide by the number of "
                   "examples",
           "parameters": "evaluation must not change the model (no backward, no step)"},
          loose=("loss",))


@CHAPTER.visible("evaluate_loss", points=1)
def visible_evaluate_loss(t, evaluate_loss_):
    spec = [("Linear", [3, 8], {}), ("Dropout", [0.5], {}), ("ReLU", [], {}),
            ("Linear", [8, 3], {})]
    X, y = classification(10, 3, 3, 50)
    with t.case("worked example: 10 examples in batches of 4, a model with dropout in "
                "training mode"):
        eval_loss_case(t, evaluate_loss_, spec, init_state(spec, 50), X, y, 4, True)


# m. a DataFrame of numbers and booleans

def frame_case(t, fn, df):
    expected = t.ref("_obs_frame", df)
    likely = t.likely("_obs_frame", df)
    what = f"frame_to_tensor(a DataFrame of {df.shape[0]} rows, dtypes " \
           f"{sorted({str(d) for d in df.dtypes})})"
    got = plain_run(t, fn, df, what=what)
    judge(got, expected, likely, what, {"value": "the tensor"},
          {"value": "every column as float32 (True -> 1.0, False -> 0.0), columns in order"})


@CHAPTER.visible("frame_to_tensor", points=1)
def visible_frame_to_tensor(t, frame_to_tensor_):
    import pandas as pd
    df = pd.DataFrame({"area": [70.0, 120.0, 95.5], "zone_RL": [True, False, True],
                       "zone_RM": [False, True, False]})
    with t.case("worked example: a float64 column and two bool columns (as pd.get_dummies "
                "makes)"):
        frame_case(t, frame_to_tensor_, df)


# n. the log RMSE as a number

def report_case(t, fn, preds, labels):
    expected = t.ref("_obs_report", preds, labels)
    likely = t.likely("_obs_report", preds, labels)
    what = f"report_log_rmse(preds of shape {tuple(preds.shape)}, labels)"
    got = plain_run(t, fn, preds, labels, what=what)
    judge(got, expected, likely, what, {"value": "the value returned"},
          {"value": "sqrt(mean((log(clamp(preds, 1, inf)) - log(labels))**2)) as a Python "
                    "float (.item())"},
          tol={"value": dict(atol=1e-6, rtol=1e-5)})


@CHAPTER.visible("report_log_rmse", points=1)
def visible_report_log_rmse(t, report_log_rmse_):
    preds = torch.tensor([[100.0], [0.5], [210.0]])
    labels = torch.tensor([[120.0], [2.0], [200.0]])
    with t.case("worked example: predictions 100, 0.5, 210 for prices 120, 2, 200"):
        report_case(t, report_log_rmse_, preds, labels)
