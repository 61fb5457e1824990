"""09_training_pipeline: the PyTorch training pipeline and its classic bugs.

Reference implementations first, then one check per exercise. The checks watch what a learner
cannot fake: forward hooks record the model's mode and whether autograd was recording; batches
come as a tensor subclass whose `.to()` returns a plain tensor, so a batch that was not moved
(`X.to(device)` without assignment) is recognised even on a CPU; the parameters after an epoch
are compared with a reference run from the same start (gradients that accumulate, or a step
before backward, change them); the last batch is smaller, so per-batch averages show.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn
from torch.utils import data

from grader.cases import gen
from grader.feedback import Mismatch, expect_close, fmt_number, type_name
from grader.registry import Chapter

CHAPTER = Chapter("09_training_pipeline", "The PyTorch training pipeline and its classic bugs")

# --- references ---------------------------------------------------------------------------


class ArrayDataset(data.Dataset):
    def __init__(self, X, Y):
        self.X, self.Y = torch.as_tensor(X), torch.as_tensor(Y)

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return self.X[i].reshape(-1).to(torch.float32), self.Y[i].to(torch.int64)


def build_model(layer_sizes):
    layers = []
    for i in range(len(layer_sizes) - 1):
        layers.append(nn.Linear(layer_sizes[i], layer_sizes[i + 1]))
        if i < len(layer_sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def train_one_epoch(model, loader, criterion, optimizer, device, *, zero_grad=True,
                    step_first=False, per_batch=False, set_train=True):
    """The reference (keyword arguments give the buggy variants the check recognises)."""
    if set_train:
        model.train()
    total, count, batches = 0.0, 0, 0
    for X, y in loader:
        X, y = X.to(device), y.to(device)
        if zero_grad:
            optimizer.zero_grad()
        loss = criterion(model(X), y)
        if step_first:
            optimizer.step()
            loss.backward()
        else:
            loss.backward()
            optimizer.step()
        total += loss.item() * (1 if per_batch else X.shape[0])
        count += X.shape[0]
        batches += 1
    return total / (batches if per_batch else count)


def evaluate_accuracy(model, loader, device):
    was_training = model.training
    model.eval()
    correct, count = 0, 0
    with torch.no_grad():
        for X, y in loader:
            X, y = X.to(device), y.to(device)
            correct += (model(X).argmax(dim=1) == y).sum().item()
            count += y.numel()
    model.train(was_training)
    return correct / count


# --- watching student code ------------------------------------------------------------------


class Unmoved(torch.Tensor):
    """A batch as the loader yields it; `.to(...)` (moving it to the device) gives a plain
    tensor, so a model that receives an Unmoved tensor got a batch that was never moved."""

    __torch_function__ = torch._C._disabled_torch_function_impl

    def to(self, *args, **kwargs):
        return self.as_subclass(torch.Tensor).to(*args, **kwargs)

    def cuda(self, *args, **kwargs):
        return self.as_subclass(torch.Tensor).cuda(*args, **kwargs)


def _collate(batch):
    X = torch.stack([b[0] for b in batch]).as_subclass(Unmoved)
    y = torch.stack([b[1] for b in batch]).as_subclass(Unmoved)
    return X, y


def loader_of(X, y, batch_size, watched=True):
    ds = data.TensorDataset(X, y)
    return data.DataLoader(ds, batch_size=batch_size, shuffle=False,
                           collate_fn=_collate if watched else None)


class Watch:
    """Forward pre-hook on a model: mode, autograd and input type at every forward pass."""

    def __init__(self, model):
        self.calls: list[tuple[bool, bool, bool]] = []
        self.handle = model.register_forward_pre_hook(self)

    def __call__(self, module, args):
        x = args[0] if args else None
        self.calls.append((module.training, torch.is_grad_enabled(), isinstance(x, Unmoved)))

    def remove(self):
        self.handle.remove()


class WatchedLoss(nn.Module):
    """Cross-entropy (mean over the batch) that notes labels that were not moved."""

    def __init__(self):
        super().__init__()
        self.unmoved = False

    def forward(self, y_hat, y):
        self.unmoved |= isinstance(y, Unmoved)
        return nn.functional.cross_entropy(y_hat, y)


def _number(x, what):
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        x = x.item()
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise Mismatch(f"{what} should return a number, but returned {type_name(x)}"
                       + ("\n  likely cause: the function has no `return` statement"
                          if x is None else ""))
    return float(x)


def _classification(n, d, c, seed, dtype=torch.float32):
    g = gen(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randint(0, c, (n,), generator=g)
    return X, y


def _seeded_model(sizes, seed, dropout=False):
    torch.manual_seed(seed)
    model = build_model(sizes)
    if dropout:
        model = nn.Sequential(model[0], nn.Dropout(0.5), *list(model)[1:])
    return model


# --- ArrayDataset ---------------------------------------------------------------------------


def _dataset_case(t, cls, X, Y, what):
    ds = t.call(cls, X, Y, what=what)
    if not isinstance(ds, data.Dataset):
        raise Mismatch(f"{what} should be a torch.utils.data.Dataset, but is {type_name(ds)}\n"
                       "  likely cause: the class does not subclass torch.utils.data.Dataset")
    n = len(X)
    length = t.call(len, ds, what=f"len({what})")
    if length != n:
        raise Mismatch(f"len({what}) is {length}, expected {n} (the number of examples)")
    Xt, Yt = torch.as_tensor(X), torch.as_tensor(Y)
    for i in sorted({0, n // 2, n - 1}):
        item = t.call(ds.__getitem__, i, what=f"{what}[{i}]")
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise Mismatch(f"{what}[{i}] should be a pair (x, y), but is {type_name(item)}")
        x, y = item
        ex = Xt[i].reshape(-1).to(torch.float32)
        if not isinstance(x, torch.Tensor):
            raise Mismatch(f"{what}[{i}][0] should be a torch.Tensor, but is {type_name(x)}")
        if x.shape != ex.shape:
            cause = ("unflattened items: return X[i].reshape(-1), a vector of "
                     f"{ex.numel()} features" if x.numel() == ex.numel() else
                     "the item is not the i-th example")
            raise Mismatch(f"{what}[{i}][0] has shape {tuple(x.shape)}, expected "
                           f"{tuple(ex.shape)}\n  likely cause: {cause}")
        if x.dtype != torch.float32:
            raise Mismatch(f"{what}[{i}][0] has dtype {x.dtype}, expected torch.float32\n"
                           "  likely cause: the features are not converted (.float(), or "
                           "torch.tensor(..., dtype=torch.float32)); nn.Linear's weights are "
                           "float32")
        if not torch.equal(x, ex):
            raise Mismatch(f"{what}[{i}][0] has wrong values: expected {ex[:6].tolist()}..., "
                           f"received {x.reshape(-1)[:6].tolist()}...\n  likely cause: not "
                           "the i-th example, or the values were rescaled")
        if isinstance(y, float) or (isinstance(y, torch.Tensor) and y.is_floating_point()):
            raise Mismatch(f"{what}[{i}][1] is a float label ({fmt_number(float(y))}); "
                           "expected an int64 class index\n  likely cause: float labels: "
                           "nn.CrossEntropyLoss needs int64 class indices (.long(), "
                           "dtype=torch.int64)")
        if isinstance(y, torch.Tensor):
            if y.dtype != torch.int64 or y.numel() != 1:
                raise Mismatch(f"{what}[{i}][1] is a tensor of dtype {y.dtype} and shape "
                               f"{tuple(y.shape)}; expected an int64 scalar (0-d) class index"
                               "\n  likely cause: convert with .long() (cross-entropy needs "
                               "int64), and index one label")
            y = y.item()
        if not isinstance(y, int) or isinstance(y, bool) or y != int(Yt[i]):
            raise Mismatch(f"{what}[{i}][1] is {y!r}, expected the label {int(Yt[i])}")
    batch = t.call(lambda: next(iter(data.DataLoader(ds, batch_size=4))),
                   what=f"a DataLoader over {what}")
    if not (isinstance(batch, list | tuple) and len(batch) == 2
            and isinstance(batch[0], torch.Tensor) and isinstance(batch[1], torch.Tensor)
            and batch[0].shape == (min(4, n), Xt[0].numel()) and batch[1].shape == (min(4, n),)
            and batch[1].dtype == torch.int64):
        raise Mismatch(f"a DataLoader over {what} should give batches X of shape "
                       f"({min(4, n)}, {Xt[0].numel()}) and y of shape ({min(4, n)},) int64")


@CHAPTER.exercise("ArrayDataset", points=2)
def check_ArrayDataset(t, ArrayDataset_):
    with t.case("worked example: 6 images (1, 3, 3) in float64, labels int32"):
        X = torch.linspace(0, 1, 54, dtype=torch.float64).reshape(6, 1, 3, 3)
        Y = torch.tensor([0, 1, 2, 1, 0, 2], dtype=torch.int32)
        _dataset_case(t, ArrayDataset_, X, Y, "ArrayDataset(X (6, 1, 3, 3), Y (6,))")
    if not t.hidden:
        return
    rng = np.random.default_rng(0)
    cases = [
        ("NumPy uint8 images (20, 28, 28), int64 labels",
         rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), rng.integers(0, 10, 20)),
        ("a NumPy float64 table (13, 5), labels as floats 0.0/1.0",
         rng.normal(size=(13, 5)), rng.integers(0, 2, 13).astype(np.float64)),
        ("one-hot bool features (9, 6) (as pd.get_dummies makes), int labels",
         rng.random((9, 6)) < 0.5, rng.integers(0, 3, 9)),
        ("float32 tensors (1, 2, 2, 2) and labels (1,)", torch.ones(1, 2, 2, 2),
         torch.tensor([4])),
    ]
    for title, X, Y in cases:
        with t.case(title):
            _dataset_case(t, ArrayDataset_, X, Y,
                          f"ArrayDataset(X {tuple(np.shape(X))}, Y {tuple(np.shape(Y))})")


# --- build_model -----------------------------------------------------------------------------


def _describe(modules):
    return "[" + ", ".join(f"Linear({m.in_features}, {m.out_features})" if isinstance(m, nn.Linear)
                           else type(m).__name__ for m in modules) + "]"


def _model_case(t, fn, sizes):
    what = f"build_model({sizes})"
    model = t.call(fn, list(sizes), what=what)
    if not isinstance(model, nn.Sequential):
        raise Mismatch(f"{what} should return an nn.Sequential, but returned {type_name(model)}")
    got = list(model.children())
    expected = list(build_model(sizes).children())
    ok = len(got) == len(expected) and all(
        type(a) is type(b) and (not isinstance(a, nn.Linear) or (
            a.in_features, a.out_features) == (b.in_features, b.out_features))
        for a, b in zip(got, expected))
    if not ok:
        linears = [m for m in got if isinstance(m, nn.Linear)]
        relus = [m for m in got if isinstance(m, nn.ReLU)]
        if got and isinstance(got[-1], nn.ReLU) and _describe(got[:-1]) == _describe(expected):
            cause = ("ReLU after the last layer: the output layer gives logits (any real "
                     "number); no activation after it")
        elif len(linears) == len(sizes) - 1 and len(relus) == len(sizes) - 2 and \
                len(got) == len(expected):
            cause = ("layers out of order: nn.Sequential applies its layers in the order given; "
                     "collect them in a list (a set does not keep the order)")
        elif len(relus) < len(sizes) - 2:
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


@CHAPTER.exercise("build_model", points=2)
def check_build_model(t, build_model_):
    with t.case("worked example: build_model([4, 8, 3])"):
        _model_case(t, build_model_, [4, 8, 3])
    if not t.hidden:
        return
    for sizes in ([784, 256, 128, 10], [5, 2], [6, 6, 6, 6], [10, 40, 30, 20, 1], [3, 9, 2]):
        with t.case(f"build_model({sizes})"):
            _model_case(t, build_model_, sizes)


# --- train_one_epoch --------------------------------------------------------------------------

TRAIN_BUGS = {
    "no zero_grad: gradients accumulate across batches; call optimizer.zero_grad() before "
    "backward in every step": dict(zero_grad=False),
    "step before backward: optimizer.step() uses the gradients of the previous batch; the order "
    "is zero_grad, forward, loss, backward, step": dict(step_first=True),
}


def _train_case(t, fn, n, batch_size, sizes, seed, momentum=0.0, stale_grads=False):
    X, y = _classification(n, sizes[0], sizes[-1], seed)
    start = copy.deepcopy(_seeded_model(sizes, seed).state_dict())

    def fresh():
        m = _seeded_model(sizes, seed)
        m.load_state_dict(start)
        m.eval()  # the function must switch to training mode itself
        if stale_grads:
            for p in m.parameters():
                p.grad = torch.full_like(p, 0.5)
        return m, torch.optim.SGD(m.parameters(), lr=0.5, momentum=momentum)

    student, opt = fresh()
    watch, criterion = Watch(student), WatchedLoss()
    what = (f"train_one_epoch(model, loader of {n} examples in batches of {batch_size}, "
            "criterion, optimizer, device)")
    try:
        got = t.call(fn, student, loader_of(X, y, batch_size), criterion, opt,
                     torch.device("cpu"), what=what, may_modify=True)
    finally:
        watch.remove()
    loss = _number(got, what)
    n_batches = math.ceil(n / batch_size)
    if len(watch.calls) != n_batches:
        raise Mismatch(f"{what} ran the model {len(watch.calls)} times, expected once per batch "
                       f"({n_batches})")
    if not all(mode for mode, _, _ in watch.calls):
        raise Mismatch(f"{what}: the model was in evaluation mode during training (it was "
                       "handed over in evaluation mode)\n  likely cause: no train(): call "
                       "model.train() first (dropout and batch norm behave differently in "
                       "training)")
    if any(unmoved for _, _, unmoved in watch.calls) or criterion.unmoved:
        raise Mismatch(f"{what}: a batch reached the model (or the loss) without being moved to "
                       "`device`\n  likely cause: `X.to(device)` returns a new tensor and leaves "
                       "X where it was: assign it, X, y = X.to(device), y.to(device)")
    ref_model, ref_opt = fresh()
    ref_loss = train_one_epoch(ref_model, loader_of(X, y, batch_size, watched=False),
                               nn.CrossEntropyLoss(), ref_opt, "cpu")
    flat = lambda m: torch.cat([p.detach().reshape(-1) for p in m.parameters()])
    got_params, ref_params = flat(student), flat(ref_model)
    if not torch.allclose(got_params, ref_params, atol=1e-5, rtol=1e-4):
        cause = "the parameters were not updated by optimizer.step() once per batch"
        for c, kw in TRAIN_BUGS.items():
            m, o = fresh()
            train_one_epoch(m, loader_of(X, y, batch_size, watched=False), nn.CrossEntropyLoss(),
                            o, "cpu", **kw)
            if torch.allclose(got_params, flat(m), atol=1e-5, rtol=1e-4):
                cause = c
                break
        else:
            if stale_grads:
                cause = ("the gradients were not reset before the first backward (the model "
                         "came with old gradients): call optimizer.zero_grad() before "
                         "backward, not only after the step")
        diff = fmt_number((got_params - ref_params).abs().max().item())
        raise Mismatch(f"{what}: the parameters after the epoch differ from one SGD step per "
                       f"batch (largest difference {diff})"
                       f"\n  likely cause: {cause}")
    m, o = fresh()
    per_batch = train_one_epoch(m, loader_of(X, y, batch_size, watched=False),
                                nn.CrossEntropyLoss(), o, "cpu", per_batch=True)
    cause = None
    if abs(loss - per_batch) < 1e-5 and abs(per_batch - ref_loss) > 1e-5:
        cause = ("per-batch averages: the mean of the batch losses weighs the smaller last "
                 "batch like a full one; sum loss.item() * X.shape[0] and divide by the number "
                 "of examples")
    elif abs(loss - ref_loss * n) < 1e-3 * ref_loss * n:
        cause = "the sum over examples: divide by the number of examples"
    expect_close(loss, ref_loss, what=f"the mean loss per example returned by {what}", atol=1e-5,
                 rtol=1e-4, cause=cause)


@CHAPTER.exercise("train_one_epoch", points=3)
def check_train_one_epoch(t, train_one_epoch_):
    with t.case("worked example: 10 examples in batches of 4 (the last has 2), a model handed "
                "over in evaluation mode"):
        _train_case(t, train_one_epoch_, 10, 4, [3, 5, 2], 0)
    if not t.hidden:
        return
    for i, (n, bs, sizes, momentum, stale) in enumerate((
            (50, 16, [4, 8, 3], 0.0, False), (33, 10, [6, 6, 6, 4], 0.9, False),
            (8, 8, [2, 3], 0.0, False), (21, 5, [5, 7, 3], 0.5, True))):
        with t.case(f"{n} examples in batches of {bs}, model {sizes}, momentum {momentum}"
                    + (", the model comes with old gradients" if stale else "")):
            _train_case(t, train_one_epoch_, n, bs, sizes, 10 + i, momentum, stale)


# --- evaluate_accuracy ----------------------------------------------------------------------


def _accuracy_case(t, fn, n, batch_size, sizes, seed, training):
    X, y = _classification(n, sizes[0], sizes[-1], seed)
    model = _seeded_model(sizes, seed, dropout=True)
    model.train(training)
    before = copy.deepcopy(model.state_dict())
    watch = Watch(model)
    what = (f"evaluate_accuracy(model in {'training' if training else 'evaluation'} mode, "
            f"loader of {n} examples in batches of {batch_size}, device)")
    try:
        got = t.call(fn, model, loader_of(X, y, batch_size), torch.device("cpu"), what=what,
                     may_modify=True)
    finally:
        watch.remove()
    acc = _number(got, what)
    if not watch.calls:
        raise Mismatch(f"{what} never ran the model")
    if any(mode for mode, _, _ in watch.calls):
        raise Mismatch(f"{what}: the model was in training mode while evaluating\n  likely "
                       "cause: no eval(): call model.eval() first (dropout is active in "
                       "training mode, so predictions are random)")
    if any(grad for _, grad, _ in watch.calls):
        raise Mismatch(f"{what}: autograd recorded the forward passes\n  likely cause: wrap "
                       "the loop in `with torch.no_grad():` (it saves memory and time)")
    if any(unmoved for _, _, unmoved in watch.calls):
        raise Mismatch(f"{what}: a batch reached the model without being moved to `device`\n"
                       "  likely cause: `X.to(device)` returns a new tensor; assign it")
    if model.training != training:
        raise Mismatch(f"{what}: afterwards the model is in "
                       f"{'training' if model.training else 'evaluation'} mode, but it was in "
                       f"{'training' if training else 'evaluation'} mode before\n  likely cause: "
                       "mode not restored: remember model.training first and call "
                       "model.train(was_training) at the end")
    after = model.state_dict()
    if any(not torch.equal(before[k], after[k]) for k in before):
        raise Mismatch(f"{what} changed the model's parameters")
    plain = copy.deepcopy(model)
    ref = evaluate_accuracy(plain, loader_of(X, y, batch_size, watched=False), "cpu")
    plain.eval()
    with torch.no_grad():
        hits = [(plain(X[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).float().mean().item()
                for i in range(0, n, batch_size)]
    cause = None
    if abs(acc - sum(hits) / len(hits)) < 1e-6 and abs(ref - sum(hits) / len(hits)) > 1e-6:
        cause = ("per-batch averages: the smaller last batch counts like a full one; count "
                 "correct predictions and divide by the number of examples")
    elif abs(acc - ref * n) < 1e-6 and n > 1:
        cause = "the number of correct predictions, not the fraction: divide by the number of " \
                "examples"
    expect_close(acc, ref, what=what, atol=1e-6, cause=cause)


@CHAPTER.exercise("evaluate_accuracy", points=2, d2l=("evaluate_accuracy_gpu",))
def check_evaluate_accuracy(t, evaluate_accuracy_):
    with t.case("worked example: 10 examples in batches of 4, a model with dropout in "
                "training mode"):
        _accuracy_case(t, evaluate_accuracy_, 10, 4, [3, 6, 3], 0, training=True)
    if not t.hidden:
        return
    for i, (n, bs, sizes, training) in enumerate((
            (10, 4, [3, 6, 3], False), (45, 20, [5, 8, 4], True), (7, 3, [4, 2], False),
            (64, 64, [8, 16, 10], True), (31, 6, [2, 5, 5, 3], True))):
        with t.case(f"{n} examples in batches of {bs}, model {sizes} in "
                    f"{'training' if training else 'evaluation'} mode"):
            _accuracy_case(t, evaluate_accuracy_, n, bs, sizes, 20 + i, training)
