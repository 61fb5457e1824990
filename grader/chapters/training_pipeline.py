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
