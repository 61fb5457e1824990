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
