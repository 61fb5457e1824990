"""09_training_pipeline: references, likely mistakes and hidden checks (instructor only).

The checks (public half: `grader.checks.training_pipeline`) watch what a learner cannot fake:
forward hooks in the kernel record the model's mode and whether autograd was recording;
batches come as a tensor subclass whose `.to()` returns a plain tensor, so a batch that was not
moved (`X.to(device)` without assignment) is recognised even on a CPU; the parameters after
training are compared with a reference run here from the same start (gradients that
accumulate, a step before backward or a step on validation data change them); the last batch
is smaller, so per-batch averages show.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn
from torch.utils import data

from grader import wire
from grader.cases import seed_of
from grader.checks.training_pipeline import (
    CHAPTER,
    OLD_GRADIENTS,
    accuracy_case,
    classification,
    dataset_case,
    init_state,
    model_case,
    train_case,
    validation_case,
)
from grader.observe import build_sequential, build_tensor_loader

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
                    step_first=False, per_batch=False, set_train=True, zero_after=False):
    """The reference (keyword arguments give the buggy variants the check recognises)."""
    if set_train:
        model.train()
    total, count, batches = 0.0, 0, 0
    for X, y in loader:
        X, y = X.to(device), y.to(device)
        if zero_grad and not zero_after:
            optimizer.zero_grad()
        loss = criterion(model(X), y)
        if step_first:
            optimizer.step()
            loss.backward()
        else:
            loss.backward()
            optimizer.step()
        if zero_after:
            optimizer.zero_grad()
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


def train_with_validation(model, train_loader, valid_loader, criterion, optimizer, num_epochs,
                          device, *, bug=None):
    """The reference; `bug` names a buggy variant the check recognises."""
    history = []
    for _ in range(num_epochs):
        if bug == "valid_first":
            valid = _validation_pass(model, valid_loader, criterion, device)
        model.train()
        total, count, batches = 0.0, 0, 0
        for X, y in train_loader:
            X, y = X.to(device), y.to(device)
            optimizer.zero_grad()
            loss = criterion(model(X), y)
            loss.backward()
            optimizer.step()
            total += loss.item() * (1 if bug == "per_batch" else X.shape[0])
            count += X.shape[0]
            batches += 1
        train_loss = (loss.item() if bug == "last_batch" else total if bug == "summed"
                      else total / (batches if bug == "per_batch" else count))
        if bug == "valid_first":
            history.append({"train_loss": float(train_loss), **valid})
            continue
        model.eval()
        total, correct, count, batches = 0.0, 0.0, 0, 0
        with torch.no_grad():
            for X, y in valid_loader:
                X, y = X.to(device), y.to(device)
                y_hat = model(X)
                weight = 1 if bug == "per_batch" else X.shape[0]
                total += criterion(y_hat, y).item() * weight
                hits = (y_hat.argmax(dim=1) == y).sum().item()
                correct += hits / X.shape[0] if bug == "per_batch" else hits
                count += X.shape[0]
                batches += 1
                if bug == "step_in_valid":
                    optimizer.step()
        mean = batches if bug == "per_batch" else count
        history.append({"train_loss": float(train_loss),
                        "valid_loss": float(total if bug == "summed" else total / mean),
                        "valid_acc": float(correct if bug == "count"
                                           else correct / (batches if bug == "per_batch"
                                                           else count))})
    model.train()
    return history


def _validation_pass(model, loader, criterion, device):
    model.eval()
    total, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for X, y in loader:
            X, y = X.to(device), y.to(device)
            y_hat = model(X)
            total += criterion(y_hat, y).item() * X.shape[0]
            correct += (y_hat.argmax(dim=1) == y).sum().item()
            count += X.shape[0]
    return {"valid_loss": total / count, "valid_acc": correct / count}


# --- reference runs for the checks (plain data in, plain data out) -------------------------------

def _params(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _dataset_items(X, Y, indices):
    ds = ArrayDataset(X, Y)
    return [tuple(ds[i]) for i in indices]


def _layer_list(sizes):
    return [(wire.type_path(type(m)), getattr(m, "in_features", None),
             getattr(m, "out_features", None)) for m in build_model(sizes)]


def _epoch_run(spec, state, X, y, batch_size, lr, momentum, stale, **bug):
    model = build_sequential(spec, state, False)
    if stale:
        for p in model.parameters():
            p.grad = torch.full_like(p, 0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    loss = train_one_epoch(model, build_tensor_loader(X, y, batch_size), nn.CrossEntropyLoss(),
                           optimizer, "cpu", **bug)
    return {"state": _params(model), "loss": loss}


def _epoch_sum(spec, state, X, y, *args):
    return {"state": None, "loss": _epoch_run(spec, state, X, y, *args)["loss"] * len(X)}


def _accuracy_run(spec, state, X, y, batch_size):
    return evaluate_accuracy(build_sequential(spec, state, False),
                             build_tensor_loader(X, y, batch_size), "cpu")


def _accuracy_per_batch(spec, state, X, y, batch_size):
    model = build_sequential(spec, state, False)
    with torch.no_grad():
        hits = [(model(Xb).argmax(1) == yb).float().mean().item()
                for Xb, yb in build_tensor_loader(X, y, batch_size)]
    return sum(hits) / len(hits)


def _validation_run(spec, state, X_train, y_train, X_valid, y_valid, train_bs, valid_bs,
                    num_epochs, lr, momentum, bug=None):
    model = build_sequential(spec, state, False)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    history = train_with_validation(model, build_tensor_loader(X_train, y_train, train_bs),
                                    build_tensor_loader(X_valid, y_valid, valid_bs),
                                    nn.CrossEntropyLoss(), optimizer, num_epochs, "cpu", bug=bug)
    return {"state": _params(model), "history": history}


PER_BATCH = ("per-batch averages: the mean of the batch means weighs the smaller last batch like "
             "a full one; sum loss.item() * X.shape[0] and divide by the number of examples")

LIKELY = {
    "_epoch_run": {
        "no zero_grad: gradients accumulate across batches; call optimizer.zero_grad() before "
        "backward in every step": functools.partial(_epoch_run, zero_grad=False),
        "step before backward: optimizer.step() uses the gradients of the previous batch; the "
        "order is zero_grad, forward, loss, backward, step":
            functools.partial(_epoch_run, step_first=True),
        OLD_GRADIENTS: functools.partial(_epoch_run, zero_after=True),
        "per-batch averages: the mean of the batch losses weighs the smaller last batch like a "
        "full one; sum loss.item() * X.shape[0] and divide by the number of examples":
            functools.partial(_epoch_run, per_batch=True),
        "the sum over examples: divide by the number of examples": _epoch_sum,
    },
    "_accuracy_run": {
        "per-batch averages: the smaller last batch counts like a full one; count correct "
        "predictions and divide by the number of examples": _accuracy_per_batch,
        "the number of correct predictions, not the fraction: divide by the number of "
        "examples": lambda spec, state, X, y, bs: _accuracy_run(spec, state, X, y, bs) * len(X),
    },
    "_validation_run": {
        PER_BATCH: functools.partial(_validation_run, bug="per_batch"),
        "valid_acc is the number of correct predictions, not the fraction: divide by the number "
        "of examples": functools.partial(_validation_run, bug="count"),
        "train_loss is the loss of the last batch only: average the losses of the whole epoch, "
        "weighting each batch by its size": functools.partial(_validation_run, bug="last_batch"),
        "the sum over examples: divide by the number of examples":
            functools.partial(_validation_run, bug="summed"),
        "an optimizer step in the validation pass: only training batches update the model":
            functools.partial(_validation_run, bug="step_in_valid"),
        "the validation pass ran before the epoch's training: validate after training, so that "
        "the numbers describe the model the epoch produced":
            functools.partial(_validation_run, bug="valid_first"),
    },
}


# --- hidden checks ----------------------------------------------------------------------------

def _spec(sizes, dropout=False):
    spec = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        spec.append(("Linear", [a, b], {}))
        if i == 0 and dropout:
            spec.append(("Dropout", [0.5], {}))
        if i < len(sizes) - 2:
            spec.append(("ReLU", [], {}))
    return spec


@CHAPTER.hidden("ArrayDataset")
def hidden_ArrayDataset(t, ArrayDataset_):
    rng = np.random.default_rng(seed_of(0))
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
            dataset_case(t, ArrayDataset_, X, Y,
                          f"ArrayDataset(X {tuple(np.shape(X))}, Y {tuple(np.shape(Y))})")


@CHAPTER.hidden("build_model")
def hidden_build_model(t, build_model_):
    for sizes in ([784, 256, 128, 10], [5, 2], [6, 6, 6, 6], [10, 40, 30, 20, 1], [3, 9, 2]):
        with t.case(f"build_model({sizes})"):
            model_case(t, build_model_, sizes)


@CHAPTER.hidden("train_one_epoch")
def hidden_train_one_epoch(t, train_one_epoch_):
    for i, (n, bs, sizes, momentum, stale) in enumerate((
            (50, 16, [4, 8, 3], 0.0, False), (33, 10, [6, 6, 6, 4], 0.9, False),
            (8, 8, [2, 3], 0.0, False), (21, 5, [5, 7, 3], 0.5, True))):
        seed = 10 + i
        spec = _spec(sizes)
        X, y = classification(n, sizes[0], sizes[-1], seed)
        with t.case(f"{n} examples in batches of {bs}, model {sizes}, momentum {momentum}"
                    + (", the model comes with old gradients" if stale else "")):
            train_case(t, train_one_epoch_, spec, init_state(spec, seed), X, y, bs,
                       momentum=momentum, stale=stale)


@CHAPTER.hidden("evaluate_accuracy")
def hidden_evaluate_accuracy(t, evaluate_accuracy_):
    for i, (n, bs, sizes, training) in enumerate((
            (10, 4, [3, 6, 3], False), (45, 20, [5, 8, 4], True), (7, 3, [4, 2], False),
            (64, 64, [8, 16, 10], True), (31, 6, [2, 5, 5, 3], True))):
        seed = 20 + i
        spec = _spec(sizes, dropout=True)
        X, y = classification(n, sizes[0], sizes[-1], seed)
        with t.case(f"{n} examples in batches of {bs}, model {sizes} in "
                    f"{'training' if training else 'evaluation'} mode"):
            accuracy_case(t, evaluate_accuracy_, spec, init_state(spec, seed), X, y, bs,
                          training)


@CHAPTER.hidden("train_with_validation")
def hidden_train_with_validation(t, train_with_validation_):
    for i, (sizes, (n_train, train_bs), (n_valid, valid_bs), epochs, lr, momentum) in enumerate((
            ([4, 8, 3], (30, 8), (11, 4), 3, 0.5, 0.0),
            ([6, 6, 6, 4], (25, 10), (9, 5), 2, 0.1, 0.9),
            ([2, 3], (16, 16), (5, 2), 2, 0.5, 0.0),
            ([5, 7, 3], (21, 5), (13, 13), 1, 0.2, 0.5))):
        seed = 30 + 2 * i
        spec = _spec(sizes)
        X_train, y_train = classification(n_train, sizes[0], sizes[-1], seed)
        X_valid, y_valid = classification(n_valid, sizes[0], sizes[-1], seed + 1)
        with t.case(f"{epochs} epoch{'s' if epochs > 1 else ''}, model {sizes}, train "
                    f"{n_train}/{train_bs}, valid {n_valid}/{valid_bs} (examples/batch size), "
                    f"momentum {momentum}"):
            validation_case(t, train_with_validation_, spec, init_state(spec, seed),
                            (X_train, y_train, X_valid, y_valid), (train_bs, valid_bs), epochs,
                            lr=lr, momentum=momentum)


# === fix-the-bug exercises: references, the original bugs and nearby wrong fixes ==============

from grader.cases import gen  # noqa: E402
from grader.checks.training_pipeline import (  # noqa: E402
    accumulate_case,
    eval_loss_case,
    frame_case,
    init_case,
    log_loss_case,
    log_price_case,
    orders_case,
    parameters_case,
    predict_case,
    report_case,
    to_device_case,
    train_step_case,
    two_losses_case,
    window_case,
)
from grader.probes.training_pipeline import BugProbe, _attempt  # noqa: E402


def _plain(impl, *args):
    value, err = _attempt(impl, *args)
    return {"error": err} if err else {"error": None, "value": value}


# a. predict -----------------------------------------------------------------------------------

def predict(model, X):
    was_training = model.training
    model.eval()
    with torch.no_grad():
        y_hat = model(X)
    model.train(was_training)
    return y_hat


def predict_eval_only(model, X):  # the original bug
    was_training = model.training
    model.eval()
    y_hat = model(X)
    model.train(was_training)
    return y_hat


def predict_no_grad_only(model, X):
    with torch.no_grad():
        return model(X)


def predict_detached(model, X):
    was_training = model.training
    model.eval()
    y_hat = model(X).detach()
    model.train(was_training)
    return y_hat


def predict_not_restored(model, X):
    model.eval()
    with torch.no_grad():
        return model(X)


def predict_train_after(model, X):
    y_hat = predict_not_restored(model, X)
    model.train()
    return y_hat


def _obs_predict(spec, state, training, X, seed, impl=predict):
    return BugProbe().predict(impl, spec, state, training, X, seed)


# b. two losses, one forward pass -----------------------------------------------------------------

def backward_two_losses(model, X, y):
    y_hat = model(X)
    data_loss = ((y_hat - y) ** 2).mean()
    size_loss = (y_hat ** 2).mean()
    (data_loss + size_loss).backward()
    return data_loss.item(), size_loss.item()


def two_losses_twice(model, X, y):  # the original bug
    y_hat = model(X)
    data_loss = ((y_hat - y) ** 2).mean()
    size_loss = (y_hat ** 2).mean()
    data_loss.backward()
    size_loss.backward()
    return data_loss.item(), size_loss.item()


def two_losses_first_only(model, X, y):
    y_hat = model(X)
    data_loss = ((y_hat - y) ** 2).mean()
    size_loss = (y_hat.detach() ** 2).mean()
    data_loss.backward()
    return data_loss.item(), size_loss.item()


def two_losses_halved(model, X, y):
    y_hat = model(X)
    data_loss = ((y_hat - y) ** 2).mean()
    size_loss = (y_hat ** 2).mean()
    ((data_loss + size_loss) / 2).backward()
    return data_loss.item(), size_loss.item()


def two_losses_zeroed(model, X, y):
    model.zero_grad()
    return backward_two_losses(model, X, y)


def two_losses_two_forwards(model, X, y):
    data_loss = ((model(X) - y) ** 2).mean()
    data_loss.backward()
    size_loss = (model(X) ** 2).mean()
    size_loss.backward()
    return data_loss.item(), size_loss.item()


def _obs_two_losses(spec, state, X, y, stale, impl=backward_two_losses):
    return BugProbe().two_losses(impl, spec, state, X, y, stale)


# c. a new order every epoch ----------------------------------------------------------------------

def epoch_orders(dataset_size, num_epochs, generator=None):
    return [torch.randperm(dataset_size, generator=generator).tolist()
            for _ in range(num_epochs)]


def orders_shuffled_once(dataset_size, num_epochs, generator=None):  # the original bug
    order = torch.randperm(dataset_size, generator=generator).tolist()
    return [order for _ in range(num_epochs)]


def orders_unshuffled(dataset_size, num_epochs, generator=None):
    return [list(range(dataset_size)) for _ in range(num_epochs)]


def orders_global(dataset_size, num_epochs, generator=None):
    return [torch.randperm(dataset_size).tolist() for _ in range(num_epochs)]


def orders_with_replacement(dataset_size, num_epochs, generator=None):
    return [torch.randint(0, dataset_size, (dataset_size,), generator=generator).tolist()
            for _ in range(num_epochs)]


def orders_rotated(dataset_size, num_epochs, generator=None):
    order = torch.randperm(dataset_size, generator=generator)
    return [order.roll(e).tolist() for e in range(num_epochs)]


def _obs_orders(n, num_epochs, seed, impl=epoch_orders):
    return BugProbe().orders(impl, n, num_epochs, seed)


def _order_probabilities(n):
    return {"position": 1 / n, "follows": 1 / n}


# d. clamp's zero gradient ----------------------------------------------------------------------

def log_mse_loss(preds, labels):
    clamped = preds.clamp(min=1)
    f = torch.log(clamped) + (preds - clamped)  # log(p) from 1 up, p - 1 below: slope 1 there
    return ((f - torch.log(labels)) ** 2).mean()


def log_mse_clamped(preds, labels):  # the original bug
    return ((torch.log(preds.clamp(min=1)) - torch.log(labels)) ** 2).mean()


def log_mse_where(preds, labels):
    f = torch.where(preds >= 1, torch.log(preds), preds - 1)
    return ((f - torch.log(labels)) ** 2).mean()


def log_mse_jump(preds, labels):
    f = torch.where(preds >= 1, torch.log(preds.clamp(min=1)), preds)
    return ((f - torch.log(labels)) ** 2).mean()


def log_mse_rooted(preds, labels):
    return torch.sqrt(log_mse_loss(preds, labels))


def _obs_log_loss(preds, labels, impl=log_mse_loss):
    return BugProbe().loss_and_grad(impl, preds, labels)


# e. training on log prices ----------------------------------------------------------------------

def fit_log_price(X, prices, lr, num_steps, *, log=torch.log, exp=torch.exp, half=False):
    n, d = X.shape
    w = torch.zeros(d, 1, dtype=X.dtype)
    b = torch.zeros(1, dtype=X.dtype)
    target = log(prices) if log is not None else prices
    for _ in range(num_steps):
        r = X @ w + b - target
        scale = 1.0 if half else 2.0
        w = w - lr * scale * X.T @ r / n
        b = b - lr * scale * r.mean(0)
    out = X @ w + b
    return exp(out) if exp is not None else out


def _obs_fit_log_price(X, prices, lr, num_steps, **bug):
    return _plain(lambda *a: fit_log_price(*a, **bug), X, prices, lr, num_steps)


# f. a small initialisation ----------------------------------------------------------------------

def init_small_(net):
    for m in net.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.01)
            nn.init.zeros_(m.bias)


def _init_with(std=0.01, uniform=False, bias=True, nested=True):
    def init(net):
        for m in (net.modules() if nested else net.children()):
            if isinstance(m, nn.Linear):
                if uniform:
                    nn.init.uniform_(m.weight, -std, std)
                else:
                    nn.init.normal_(m.weight, 0.0, std)
                if bias:
                    nn.init.zeros_(m.bias)
    return init


def _obs_init(spec, nested, seed, impl=init_small_):
    return BugProbe().init(impl, spec, nested, seed)


def _init_target():
    return {"std": 0.01, "kurtosis": 3.0, "bias": 0.0}


# g. Dataset method names --------------------------------------------------------------------------

class WindowDataset(data.Dataset):
    def __init__(self, series, window):
        self.series, self.window = series, window

    def __len__(self):
        return len(self.series) - self.window

    def __getitem__(self, i):
        return self.series[i:i + self.window], self.series[i + self.window]


class WindowTypos(data.Dataset):  # the original bug
    def __init__(self, series, window):
        self.series, self.window = series, window

    def __len__(self, i):
        return len(self.series) - self.window

    def __getitem(self, i):
        return self.series[i:i + self.window], self.series[i + self.window]


class WindowGetitemTypo(WindowTypos):
    def __len__(self):
        return len(self.series) - self.window


class WindowLenTypo(WindowTypos):
    def __getitem__(self, i):
        return WindowDataset.__getitem__(self, i)


class WindowLength(WindowDataset):
    def __len__(self):
        return len(self.series)


def _obs_window(series, window, indices, impl=WindowDataset):
    return BugProbe().dataset(impl, series, window, indices)


# h. parameters of several modules -------------------------------------------------------------

def parameters_once(*modules):
    return list(dict.fromkeys(p for m in modules for p in m.parameters()))


def parameters_set(*modules):  # the original bug; a set's order, made reproducible here
    unique = list(dict.fromkeys(p for m in modules for p in m.parameters()))
    return unique[::-1]


def parameters_chained(*modules):
    return [p for m in modules for p in m.parameters()]


def _obs_parameters_once(specs, ties, impl=parameters_once):
    return BugProbe().parameters_once(impl, specs, ties)


# i. moving a batch ---------------------------------------------------------------------------------

def to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def to_device_unassigned(batch, device):  # the original bug
    for x in (batch.values() if isinstance(batch, dict) else
              batch if isinstance(batch, list | tuple) else [batch]):
        if isinstance(x, torch.Tensor):
            x.to(device)
    return batch


def to_device_list(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, list | tuple):
        return [to_device_list(b, device) for b in batch]
    if isinstance(batch, dict):
        return {k: to_device_list(v, device) for k, v in batch.items()}
    return batch


def to_device_flat(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return type(batch)(b.to(device) if isinstance(b, torch.Tensor) else b for b in batch)


def _obs_to_device(batch, device, impl=to_device):
    return BugProbe().to_device(impl, batch, device)


# j. one training step ------------------------------------------------------------------------------

def train_step(model, X, y, criterion, optimizer, *, zero=True, step_first=False, item=True):
    if zero:
        optimizer.zero_grad()
    loss = criterion(model(X), y)
    if step_first:
        optimizer.step()
        loss.backward()
    else:
        loss.backward()
        optimizer.step()
    return loss.item() if item else loss


def train_step_typo(model, X, y, criterion, optimizer):  # the original bug
    optimizer.zero_grad()
    loss = criterion(model(X), y)
    loss.backword()
    optimizer.step()
    return loss.item()


def _obs_train_step(spec, state, X, y, lr, stale, impl=train_step):
    return BugProbe().train_step(impl, spec, state, X, y, lr, stale)


# k. gradient accumulation --------------------------------------------------------------------------

def accumulate_and_step(model, micro_batches, criterion, optimizer, *, bug=None):
    if bug != "no_zero":
        optimizer.zero_grad()
    n = sum(len(X) for X, _ in micro_batches)
    total = 0.0
    for X, y in micro_batches:
        if bug == "zero_inside":
            optimizer.zero_grad()
        loss = criterion(model(X), y)
        weight = (1 / len(micro_batches) if bug == "unweighted" else 1.0 if bug == "summed"
                  else len(X) / n)
        (loss * weight).backward()
        total += loss.item() * len(X)
        if bug == "step_each":
            optimizer.step()
    if bug != "step_each":
        optimizer.step()
    return total / n


def _obs_accumulate(spec, state, micro_batches, lr, stale, **bug):
    return BugProbe().accumulate(lambda *a: accumulate_and_step(*a, **bug), spec, state,
                                 micro_batches, lr, stale)


# l. evaluation loss ---------------------------------------------------------------------------------

def evaluate_loss(model, loader, criterion, device, *, eval_mode=True, no_grad=True,
                  restore=True, per_batch=False):
    was_training = model.training
    if eval_mode:
        model.eval()
    total, count, batches = 0.0, 0, 0
    with torch.set_grad_enabled(not no_grad):
        for X, y in loader:
            X, y = X.to(device), y.to(device)
            loss = criterion(model(X), y).item()
            total += loss * (1 if per_batch else len(y))
            count += len(y)
            batches += 1
    if restore:
        model.train(was_training)
    return total / (batches if per_batch else count)


def _obs_eval_loss(spec, state, X, y, batch_size, training, seed, **bug):
    return BugProbe().eval_loss(lambda *a: evaluate_loss(*a, **bug), spec, state, X, y,
                                batch_size, training, seed)


# m. a DataFrame to a tensor ---------------------------------------------------------------------------

def frame_to_tensor(df):
    return torch.tensor(df.to_numpy(dtype=np.float32))


def frame_object_array(df):  # the original bug
    return torch.tensor(df.values, dtype=torch.float32)


def _obs_frame(df, impl=frame_to_tensor):
    return _plain(impl, df)


# n. the log RMSE as a number -------------------------------------------------------------------------

def report_log_rmse(preds, labels):
    return torch.sqrt(torch.mean((torch.log(preds.clamp(min=1)) - torch.log(labels)) ** 2)).item()


def report_misspelt(preds, labels):  # the original bug
    rmse = torch.sqrt(torch.mean((torch.log(preds.clamp(min=1)) - torch.log(labels)) ** 2))  # noqa: F841
    return rsme.item()  # noqa: F821


def _obs_report(preds, labels, impl=report_log_rmse):
    return _plain(impl, preds, labels)


_P = functools.partial

LIKELY.update({
    "_obs_predict": {
        "model.eval() alone: eval() switches dropout (and batch norm) to evaluation behaviour, "
        "but autograd still records the forward pass and keeps its graph alive; wrap the "
        "forward pass in `with torch.no_grad():` as well": _P(_obs_predict,
                                                              impl=predict_eval_only),
        ".detach() after the forward pass: the result has no graph, but autograd recorded one "
        "during the pass (memory and time spent for nothing); run the pass inside "
        "`with torch.no_grad():`": _P(_obs_predict, impl=predict_detached),
        "torch.no_grad() alone: it stops the recording, but dropout stays on in training mode; "
        "call model.eval() as well": _P(_obs_predict, impl=predict_no_grad_only),
        "mode not restored: remember was_training = model.training first and call "
        "model.train(was_training) at the end": _P(_obs_predict, impl=predict_not_restored),
        "model.train() at the end puts a model that was in evaluation mode into training "
        "mode: restore the mode it had, model.train(was_training)":
            _P(_obs_predict, impl=predict_train_after),
    },
    "_obs_two_losses": {
        "backward twice through one graph: the first backward() frees the intermediate values "
        "the graph saved; add the losses and call backward once, (data_loss + "
        "size_loss).backward(), or pass retain_graph=True to the first backward":
            _P(_obs_two_losses, impl=two_losses_twice),
        "only data_loss's gradient: size_loss must be back-propagated too (through the same "
        "y_hat, not a detached copy)": _P(_obs_two_losses, impl=two_losses_first_only),
        "the mean of the two losses: ((a + b) / 2).backward() halves the gradients; the "
        "gradient of a sum is the sum of the gradients: (a + b).backward()":
            _P(_obs_two_losses, impl=two_losses_halved),
        "gradients already in .grad were erased (zero_grad inside the function): backward adds "
        "to .grad, and resetting is the caller's decision (as before optimizer.step())":
            _P(_obs_two_losses, impl=two_losses_zeroed),
        "two forward passes: the gradients are right, but the model runs twice; compute y_hat "
        "once and sum the two losses": _P(_obs_two_losses, impl=two_losses_two_forwards),
    },
    "_obs_orders": {
        "shuffled once: the permutation is drawn before the loop over epochs and reused, so "
        "every epoch visits the examples in the same order; draw a new torch.randperm(n, "
        "generator=generator) inside the loop, once per epoch":
            _P(_obs_orders, impl=orders_shuffled_once),
        "no shuffling: range(n) every epoch keeps the data set's own order (a data set sorted "
        "by label then feeds one class at a time)": _P(_obs_orders, impl=orders_unshuffled),
        "the global random generator: torch.randperm(n) without generator=generator ignores "
        "the generator, so a seeded run cannot be repeated; pass generator=generator":
            _P(_obs_orders, impl=orders_global),
        "draws with replacement: torch.randint repeats some examples and skips others; an "
        "epoch visits each example once: torch.randperm": _P(_obs_orders,
                                                             impl=orders_with_replacement),
        "a rotated order: shifting one permutation by the epoch number keeps the neighbours "
        "together; draw an independent permutation every epoch":
            _P(_obs_orders, impl=orders_rotated),
    },
    "_obs_log_loss": {
        "clamp's gradient is zero below the clamp: predictions under 1 get no gradient, so a "
        "model whose predictions start there never moves; continue log below 1 by its tangent "
        "p - 1, e.g. torch.log(p.clamp(min=1)) + (p - p.clamp(min=1))":
            _P(_obs_log_loss, impl=log_mse_clamped),
        "torch.where evaluates both branches: torch.log(p) at p <= 0 is -inf or NaN there, and "
        "its gradient times 0 is NaN; clamp the input of the log (torch.log(p.clamp(min=1)))":
            _P(_obs_log_loss, impl=log_mse_where),
        "the continuation below 1 must meet log at 1: log(1) = 0, so use p - 1 (not p), which "
        "has the same value and slope there": _P(_obs_log_loss, impl=log_mse_jump),
        "the square root of the mean: that is the log RMSE, reported for people; train on the "
        "mean squared difference itself": _P(_obs_log_loss, impl=log_mse_rooted),
    },
    "_obs_fit_log_price": {
        "trained on raw prices: a squared loss on prices is dominated by the most expensive "
        "houses (the cheap ones get large relative errors) and a linear model of the price "
        "can go negative; fit log(prices) and return torch.exp(X @ w + b)":
            _P(_obs_fit_log_price, log=None, exp=None),
        "predictions in log units: the model predicts log(price); report prices with "
        "torch.exp(X @ w + b)": _P(_obs_fit_log_price, exp=None),
        "log10 targets but exp back (or the other way round): use the natural log and exp, or "
        "the same base both ways": _P(_obs_fit_log_price, log=torch.log10),
        "a factor 1/2 in the loss (d2l's squared_loss): the loss here is the plain mean "
        "squared error, whose gradient is 2 X^T r / n": _P(_obs_fit_log_price, half=True),
    },
    "_obs_init": {
        "a standard deviation of 10: the pre-activations are then hundreds of times too large "
        "(the loss is huge or NaN, tanh and sigmoid saturate); std=0.01":
            _P(_obs_init, impl=_init_with(std=10.0)),
        "std 1 (torch.randn or normal_ without std): pass std=0.01":
            _P(_obs_init, impl=_init_with(std=1.0)),
        "std 0.1: normal_'s third argument is the standard deviation (0.01), not the variance":
            _P(_obs_init, impl=_init_with(std=0.1)),
        "a uniform distribution: uniform_(-0.01, 0.01) has the wrong shape and a smaller "
        "spread; draw from a normal distribution, nn.init.normal_(w, 0, 0.01)":
            _P(_obs_init, impl=_init_with(uniform=True)),
        "biases left as they were: set them to zero (nn.init.zeros_(m.bias))":
            _P(_obs_init, impl=_init_with(bias=False)),
        "only the top-level layers (net.children()): layers inside a nested block are missed; "
        "use net.modules() or net.apply(...)": _P(_obs_init, impl=_init_with(nested=False)),
    },
    "_obs_window": {
        "misspelt special methods: Python calls exactly `__len__(self)` for len(dataset) (no "
        "index argument) and `__getitem__(self, i)` for dataset[i] (two underscores at both "
        "ends); a method named otherwise is never called": _P(_obs_window, impl=WindowTypos),
        "`__getitem` is not `__getitem__`: dataset[i] calls `__getitem__`, which "
        "torch.utils.data.Dataset leaves unimplemented; spell it with two underscores at both "
        "ends": _P(_obs_window, impl=WindowGetitemTypo),
        "`__len__` takes no index: len(dataset) calls it with self only; `def __len__(self):`":
            _P(_obs_window, impl=WindowLenTypo),
        "len(series) windows: the last `window` positions have no target after them; there "
        "are len(series) - window items": _P(_obs_window, impl=WindowLength),
    },
    "_obs_parameters_once": {
        "a set has no order: the parameters come out in an order that depends on memory "
        "addresses (it changes between runs, and an optimizer's saved state no longer matches "
        "its tensors); keep the first appearance of each in a list, e.g. "
        "list(dict.fromkeys(...))": _P(_obs_parameters_once, impl=parameters_set),
        "a shared tensor twice: chaining the modules' parameters() lists a tensor they share "
        "once per module (an optimizer would update it twice per step); keep each tensor once":
            _P(_obs_parameters_once, impl=parameters_chained),
    },
    "_obs_to_device": {
        "`x.to(device)` returns a moved copy and leaves x where it was: keep the result, "
        "e.g. build a new container of the moved tensors": _P(_obs_to_device,
                                                             impl=to_device_unassigned),
        "a list where a tuple was: keep each container's type (type(batch)(...))":
            _P(_obs_to_device, impl=to_device_list),
        "nested containers are not moved: apply the function recursively to every element":
            _P(_obs_to_device, impl=to_device_flat),
    },
    "_obs_train_step": {
        "a misspelt method: `loss.backword()` fails only when the line runs (Python looks "
        "methods up at run time); the method is `loss.backward()`":
            _P(_obs_train_step, impl=train_step_typo),
        "no zero_grad: backward adds to the gradients already in .grad; call "
        "optimizer.zero_grad() before backward": _P(_obs_train_step,
                                                   impl=_P(train_step, zero=False)),
        "step before backward: optimizer.step() then uses the old gradients; the order is "
        "zero_grad, forward, loss, backward, step": _P(_obs_train_step,
                                                       impl=_P(train_step, step_first=True)),
        "the loss tensor returned: return loss.item(), a Python float (a tensor keeps the "
        "whole graph alive)": _P(_obs_train_step, impl=_P(train_step, item=False)),
    },
    "_obs_accumulate": {
        "no zero_grad first: gradients left in .grad from before (the previous call) are "
        "added to this step's; call optimizer.zero_grad() once, before the first micro-batch":
            _P(_obs_accumulate, bug="no_zero"),
        "zero_grad inside the loop: every micro-batch erases the gradients of the ones "
        "before; reset once, before the loop": _P(_obs_accumulate, bug="zero_inside"),
        "a step per micro-batch: accumulate the gradients of all the micro-batches, then "
        "step once": _P(_obs_accumulate, bug="step_each"),
        "unweighted micro-batches: the loss of each is a mean over its examples; weight it by "
        "len(X) / n (n: all the examples) so that a smaller one counts less":
            _P(_obs_accumulate, bug="unweighted"),
        "the sum of the micro-batch means: the gradient is about k times too large; weight "
        "each by len(X) / n": _P(_obs_accumulate, bug="summed"),
    },
    "_obs_eval_loss": {
        "no eval(): dropout stays on, so the loss is measured on a randomly thinned network "
        "(higher, and different at every call); call model.eval() first and restore the mode "
        "at the end": _P(_obs_eval_loss, eval_mode=False),
        "the forward passes ran with autograd recording: wrap the loop in "
        "`with torch.no_grad():`": _P(_obs_eval_loss, no_grad=False),
        "mode not restored: remember was_training = model.training first and call "
        "model.train(was_training) at the end": _P(_obs_eval_loss, restore=False),
        PER_BATCH: _P(_obs_eval_loss, per_batch=True),
    },
    "_obs_frame": {
        "a table of float64 and bool columns becomes a NumPy array of Python objects "
        "(dtype object), which torch.tensor rejects; convert first: "
        "df.astype('float32') or df.to_numpy(dtype=np.float32)":
            _P(_obs_frame, impl=frame_object_array),
        "float64: torch.tensor keeps NumPy's float64; nn.Linear's weights are float32 "
        "(df.astype('float32'))": _P(_obs_frame, impl=lambda df: torch.tensor(
            df.astype(float).to_numpy())),
        "the bool columns were dropped: keep every column, True as 1.0 and False as 0.0":
            _P(_obs_frame, impl=lambda df: torch.tensor(
                df.select_dtypes("number").to_numpy(dtype=np.float32))),
    },
    "_obs_report": {
        "a misspelt name: `rsme` is not the `rmse` computed on the line before; Python finds "
        "names only when a line runs (a linter such as ruff flags undefined names)":
            _P(_obs_report, impl=report_misspelt),
        "a tensor returned: return a Python float with .item()":
            _P(_obs_report, impl=lambda p, y: torch.sqrt(torch.mean(
                (torch.log(p.clamp(min=1)) - torch.log(y)) ** 2))),
        "no clamp: the log of a prediction below 1 is negative (or NaN below 0); clamp the "
        "predictions to at least 1 first": _P(_obs_report, impl=lambda p, y: torch.sqrt(
            torch.mean((torch.log(p) - torch.log(y)) ** 2)).item()),
        "no square root: the RMSE is the root of the mean squared difference":
            _P(_obs_report, impl=lambda p, y: torch.mean(
                (torch.log(p.clamp(min=1)) - torch.log(y)) ** 2).item()),
    },
})


# --- hidden checks of the fix-the-bug exercises -------------------------------------------------

@CHAPTER.hidden("predict")
def hidden_predict(t, predict_):
    for i, (sizes, n, training) in enumerate((([5, 8, 3], 7, True), ([5, 8, 3], 4, False),
                                              ([3, 6, 6, 2], 9, True))):
        spec = _spec(sizes, dropout=True)
        with t.case(f"a model {sizes} with dropout in {'training' if training else 'evaluation'}"
                    f" mode, X ({n}, {sizes[0]})"):
            predict_case(t, predict_, spec, init_state(spec, 60 + i), training,
                         torch.randn(n, sizes[0], generator=gen(60 + i)))


@CHAPTER.hidden("backward_two_losses")
def hidden_backward_two_losses(t, backward_two_losses_):
    for i, (sizes, n, stale) in enumerate((([4, 5, 2], 9, False), ([3, 4, 1], 5, True),
                                           ([2, 6, 6, 3], 12, True))):
        spec = [("Tanh", [], {}) if name == "ReLU" else (name, args, kw)
                for name, args, kw in _spec(sizes)]
        with t.case(f"a model {sizes}, X ({n}, {sizes[0]})"
                    + (", .grad holding gradients already" if stale else "")):
            two_losses_case(t, backward_two_losses_, spec, init_state(spec, 70 + i),
                            torch.randn(n, sizes[0], generator=gen(70 + i)),
                            torch.randn(n, sizes[-1], generator=gen(75 + i)), stale)


@CHAPTER.hidden("epoch_orders")
def hidden_epoch_orders(t, epoch_orders_):
    for i, (n, epochs) in enumerate(((20, 6), (9, 3), (50, 2))):
        with t.case(f"{n} examples, {epochs} epochs"):
            orders_case(t, epoch_orders_, n, epochs, 80 + i)
    with t.case("5 examples, 3000 epochs: every position equally likely for each example"):
        orders_case(t, epoch_orders_, 5, 3000, 85, stats=True)


@CHAPTER.hidden("log_mse_loss")
def hidden_log_mse_loss(t, log_mse_loss_):
    g = gen(90)
    cases_ = [
        ("predictions 0 and below 1 among others, float32",
         torch.tensor([[0.0], [3.5], [0.99], [1000.0], [-2.0], [1.0], [40.0]]),
         torch.exp(torch.rand(7, 1, generator=g) * 8 + 1)),
        ("float64, all predictions below 1", -torch.rand(5, 1, generator=g, dtype=torch.float64),
         torch.exp(torch.rand(5, 1, generator=g, dtype=torch.float64) * 5 + 1)),
        ("all predictions above 1", torch.exp(torch.rand(8, 1, generator=g) * 6 + 0.1),
         torch.exp(torch.rand(8, 1, generator=g) * 6 + 0.1)),
    ]
    for title, preds, labels in cases_:
        with t.case(title):
            log_loss_case(t, log_mse_loss_, preds, labels)


@CHAPTER.hidden("fit_log_price")
def hidden_fit_log_price(t, fit_log_price_):
    for i, (n, d, lr, steps, dtype) in enumerate(((50, 4, 0.05, 50, torch.float32),
                                                  (30, 2, 0.1, 30, torch.float64))):
        X = torch.randn(n, d, generator=gen(100 + i), dtype=dtype)
        w = torch.randn(d, 1, generator=gen(102 + i), dtype=dtype) * 0.3
        prices = torch.exp(11.5 + X @ w + 0.1 * torch.randn(n, 1, generator=gen(104 + i),
                                                            dtype=dtype))
        with t.case(f"{n} houses, {d} features, {str(dtype).replace('torch.', '')}, lr={lr}, "
                    f"{steps} steps"):
            log_price_case(t, fit_log_price_, X, prices, lr, steps)


@CHAPTER.hidden("init_small_")
def hidden_init_small_(t, init_small__):
    for i, (sizes, nested) in enumerate((([256, 128, 10], False), ([100, 80, 60, 10], True))):
        spec = _spec(sizes)
        with t.case(f"an MLP {sizes}" + (" with its first layer in a nested block" if nested
                                         else "")):
            init_case(t, init_small__, spec, nested, 110 + i)


@CHAPTER.hidden("WindowDataset")
def hidden_WindowDataset(t, WindowDataset_):
    cases_ = [(torch.randn(25, generator=gen(120), dtype=torch.float64), 5),
              (torch.linspace(0, 1, 7), 6), (torch.randn(12, generator=gen(121)), 1)]
    for series, window in cases_:
        with t.case(f"a {str(series.dtype).replace('torch.', '')} series of {len(series)} "
                    f"values, window {window}"):
            window_case(t, WindowDataset_, series, window)


@CHAPTER.hidden("parameters_once")
def hidden_parameters_once(t, parameters_once_):
    a = [("Linear", [6, 4], {}), ("ReLU", [], {}), ("Linear", [4, 4], {})]
    b = [("Linear", [4, 4], {}), ("ReLU", [], {}), ("Linear", [4, 6], {})]
    c = [("Linear", [6, 4], {}), ("LayerNorm", [4], {}), ("Linear", [4, 2], {})]
    for title, specs, ties in (
            ("three modules; two tensors shared", [a, b, c],
             [[(0, "2.weight"), (1, "0.weight")], [(0, "0.bias"), (2, "0.bias")]]),
            ("one module", [c], []),
            ("two modules, nothing shared", [b, a], [])):
        with t.case(title):
            parameters_case(t, parameters_once_, specs, ties)


@CHAPTER.hidden("to_device")
def hidden_to_device(t, to_device_):
    X = torch.randn(3, 2, generator=gen(130), dtype=torch.float64)
    y = torch.tensor([2, 0, 1])
    for title, batch, device in (
            ("a dict with a list of ids, to 'meta'", {"x": X, "y": y, "ids": [4, 5, 6]}, "meta"),
            ("a nested batch (X, [mask, y]) to 'meta'", (X, [X > 0, y]), "meta"),
            ("one tensor to 'meta'", X, "meta"),
            ("a list [X, y, 'name'] to 'cpu' (values and dtypes kept)", [X, y, "name"], "cpu")):
        with t.case(title):
            to_device_case(t, to_device_, batch, device)


@CHAPTER.hidden("train_step")
def hidden_train_step(t, train_step_):
    for i, (sizes, n, lr, stale) in enumerate((([4, 6, 2], 10, 0.05, True),
                                               ([2, 1], 5, 0.3, False),
                                               ([5, 5, 5, 1], 7, 0.1, True))):
        spec = _spec(sizes)
        with t.case(f"a model {sizes}, {n} examples, lr={lr}"
                    + (", .grad holding old gradients" if stale else "")):
            train_step_case(t, train_step_, spec, init_state(spec, 140 + i),
                            torch.randn(n, sizes[0], generator=gen(140 + i)),
                            torch.randn(n, sizes[-1], generator=gen(145 + i)), lr, stale)


@CHAPTER.hidden("accumulate_and_step")
def hidden_accumulate_and_step(t, accumulate_and_step_):
    for i, (sizes, batch_sizes, lr, stale) in enumerate((([3, 5, 2], [5, 5, 2], 0.1, False),
                                                         ([4, 1], [6], 0.2, True),
                                                         ([2, 3, 1], [1, 4, 3, 2], 0.05, True))):
        spec = _spec(sizes)
        g = gen(150 + i)
        micro = [(torch.randn(b, sizes[0], generator=g), torch.randn(b, sizes[-1], generator=g))
                 for b in batch_sizes]
        with t.case(f"a model {sizes}, micro-batches of {batch_sizes}, lr={lr}"
                    + (", .grad holding old gradients" if stale else "")):
            accumulate_case(t, accumulate_and_step_, spec, init_state(spec, 150 + i), micro, lr,
                            stale)


@CHAPTER.hidden("evaluate_loss")
def hidden_evaluate_loss(t, evaluate_loss_):
    for i, (n, bs, sizes, training) in enumerate(((13, 5, [4, 8, 3], True),
                                                  (9, 9, [3, 6, 2], False),
                                                  (20, 6, [5, 7, 7, 4], True))):
        spec = _spec(sizes, dropout=True)
        X, y = classification(n, sizes[0], sizes[-1], 160 + i)
        with t.case(f"{n} examples in batches of {bs}, model {sizes} in "
                    f"{'training' if training else 'evaluation'} mode"):
            eval_loss_case(t, evaluate_loss_, spec, init_state(spec, 160 + i), X, y, bs,
                           training)


@CHAPTER.hidden("frame_to_tensor")
def hidden_frame_to_tensor(t, frame_to_tensor_):
    import pandas as pd
    rng = np.random.default_rng(seed_of(170))
    n = 6
    frames = [
        ("float64, int64 and bool columns", pd.DataFrame({
            "LotArea": rng.normal(size=n) * 1000, "Rooms": rng.integers(1, 9, n),
            "Street_Pave": rng.random(n) < 0.5, "Street_Grvl": rng.random(n) < 0.5})),
        ("bool columns only", pd.DataFrame({f"c{k}": rng.random(4) < 0.5 for k in range(3)})),
    ]
    for title, df in frames:
        with t.case(title):
            frame_case(t, frame_to_tensor_, df)


@CHAPTER.hidden("report_log_rmse")
def hidden_report_log_rmse(t, report_log_rmse_):
    g = gen(180)
    for title, preds, labels in (
            ("float64, some predictions below 1 and below 0",
             torch.tensor([[5.0], [0.2], [-4.0], [300.0]], dtype=torch.float64),
             torch.tensor([[4.0], [3.0], [2.0], [280.0]], dtype=torch.float64)),
            ("all predictions above 1", torch.exp(torch.rand(9, 1, generator=g) * 10 + 1),
             torch.exp(torch.rand(9, 1, generator=g) * 10 + 1))):
        with t.case(title):
            report_case(t, report_log_rmse_, preds, labels)
