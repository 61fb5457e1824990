"""Chapter 09: references behave like PyTorch's own pieces; the hidden checks accept correct
answers written differently and reject the classic pipeline bugs with specific feedback."""

from collections import OrderedDict

import torch
from torch import nn
from torch.utils import data

from grader.chapters import training_pipeline as ref

CH = "09_training_pipeline"


# --- references --------------------------------------------------------------------------------

def test_array_dataset_batches_like_tensor_dataset():
    X, y = torch.rand(10, 1, 2, 2, dtype=torch.float64), torch.arange(10, dtype=torch.int32)
    Xb, yb = next(iter(data.DataLoader(ref.ArrayDataset(X, y), batch_size=4)))
    assert Xb.shape == (4, 4) and Xb.dtype == torch.float32 and yb.dtype == torch.int64
    assert torch.equal(Xb, X[:4].reshape(4, -1).float())


def test_train_one_epoch_matches_full_batch_gradient_descent():
    torch.manual_seed(0)
    X, y = torch.randn(12, 3), torch.randint(0, 2, (12,))
    model = ref.build_model([3, 2])
    twin = ref.build_model([3, 2])
    twin.load_state_dict(model.state_dict())
    loss = ref.train_one_epoch(model, data.DataLoader(data.TensorDataset(X, y), batch_size=12),
                               nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), 0.1),
                               "cpu")
    opt = torch.optim.SGD(twin.parameters(), 0.1)
    ce = nn.functional.cross_entropy(twin(X), y)
    ce.backward()
    opt.step()
    assert abs(loss - ce.item()) < 1e-6
    assert all(torch.allclose(a, b) for a, b in zip(model.parameters(), twin.parameters()))


def test_evaluate_accuracy_restores_mode():
    model = ref.build_model([2, 2])
    loader = data.DataLoader(data.TensorDataset(torch.randn(5, 2), torch.zeros(5).long()), 2)
    for mode in (True, False):
        model.train(mode)
        ref.evaluate_accuracy(model, loader, "cpu")
        assert model.training == mode


def test_train_with_validation_weights_batches_by_size_and_leaves_training_mode():
    torch.manual_seed(0)
    X, y = torch.randn(7, 3), torch.randint(0, 2, (7,))
    model = ref.build_model([3, 2])
    twin = ref.build_model([3, 2])
    twin.load_state_dict(model.state_dict())
    loader = data.DataLoader(data.TensorDataset(X, y), batch_size=3)  # batches 3, 3, 1
    model.eval()
    history = ref.train_with_validation(model, loader, loader, nn.CrossEntropyLoss(),
                                        torch.optim.SGD(model.parameters(), 0.1), 2, "cpu")
    assert model.training and len(history) == 2
    opt = torch.optim.SGD(twin.parameters(), 0.1)
    for epoch in history:
        assert set(epoch) == {"train_loss", "valid_loss", "valid_acc"}
        assert all(type(v) is float for v in epoch.values())
        train_loss = ref.train_one_epoch(twin, loader, nn.CrossEntropyLoss(), opt, "cpu")
        with torch.no_grad():
            y_hat = twin(X)
        assert abs(epoch["train_loss"] - train_loss) < 1e-6
        assert abs(epoch["valid_loss"] - nn.functional.cross_entropy(y_hat, y).item()) < 1e-6
        assert abs(epoch["valid_acc"] - (y_hat.argmax(1) == y).float().mean().item()) < 1e-6


# --- correct variants -------------------------------------------------------------------------------

class DatasetEager(data.Dataset):
    def __init__(self, X, Y):
        self.X = torch.tensor(X).reshape(len(X), -1).float() if not isinstance(
            X, torch.Tensor) else X.reshape(len(X), -1).float()
        self.Y = torch.as_tensor(Y).long()

    def __len__(self):
        return self.X.shape[0]

    def __getitem__(self, idx):
        return self.X[idx], self.Y[idx]


class DatasetInt(data.Dataset):
    def __init__(self, X, Y):
        self.X, self.Y = X, Y

    def __len__(self):
        return len(self.Y)

    def __getitem__(self, i):
        return torch.as_tensor(self.X[i], dtype=torch.float32).flatten(), int(self.Y[i])


def build_model_dict(layer_sizes):
    layers = OrderedDict()
    pairs = list(zip(layer_sizes[:-1], layer_sizes[1:]))
    for i, (a, b) in enumerate(pairs):
        layers[f"fc{i}"] = nn.Linear(a, b)
        if i < len(pairs) - 1:
            layers[f"relu{i}"] = nn.ReLU()
    return nn.Sequential(layers)


def build_model_append(layer_sizes):
    net = nn.Sequential()
    for a, b in zip(layer_sizes, layer_sizes[1:]):
        net.append(nn.Linear(a, b))
        net.append(nn.ReLU())
    return nn.Sequential(*list(net)[:-1])


def train_epoch_set_to_none(model, loader, criterion, optimizer, device):
    model.train()
    total, n = 0.0, 0
    for X, y in loader:
        X = X.to(device)
        y = y.to(device)
        optimizer.zero_grad(set_to_none=True)
        y_hat = model(X)
        loss = criterion(y_hat, y)
        loss.backward()
        optimizer.step()
        total += float(loss) * len(y)
        n += len(y)
    return total / n


def train_epoch_dataset_len(model, loader, criterion, optimizer, device):
    model.train(True)
    losses = []
    for X, y in loader:
        X, y = X.to(device), y.to(device)
        for p in model.parameters():
            p.grad = None
        l = criterion(model(X), y)
        l.backward()
        optimizer.step()
        losses.append(l.detach() * X.shape[0])
    return torch.stack(losses).sum() / len(loader.dataset)


def accuracy_flags(model, loader, device):
    was = model.training
    model.eval()
    hits = []
    with torch.inference_mode():
        for X, y in loader:
            X, y = X.to(device), y.to(device)
            hits.append(model(X).argmax(-1) == y)
    model.train(was)
    return torch.cat(hits).float().mean()


def accuracy_try_finally(model, loader, device):
    mode = model.training
    try:
        model.eval()
        correct = total = 0
        for X, y in loader:
            X, y = X.to(device), y.to(device)
            with torch.no_grad():
                correct += int((model(X).argmax(1) == y).sum())
            total += len(y)
        return correct / total
    finally:
        if mode:
            model.train()


def fit_with_helpers(model, train_loader, valid_loader, criterion, optimizer, num_epochs, device):
    """train_one_epoch, then a loss pass and evaluate_accuracy (two passes over valid_loader)."""
    history = []
    for _ in range(num_epochs):
        train_loss = ref.train_one_epoch(model, train_loader, criterion, optimizer, device)
        model.eval()
        total, n = 0.0, 0
        with torch.no_grad():
            for X, y in valid_loader:
                X, y = X.to(device), y.to(device)
                total += criterion(model(X), y).item() * len(y)
                n += len(y)
        acc = ref.evaluate_accuracy(model, valid_loader, device)
        history.append({"train_loss": train_loss, "valid_loss": total / n, "valid_acc": acc})
    model.train()
    return history


def fit_inference_mode(model, train_loader, valid_loader, criterion, optimizer, num_epochs,
                       device):
    history = []
    for _ in range(num_epochs):
        model.train(True)
        losses = []
        for X, y in train_loader:
            X = X.to(device)
            y = y.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(X), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach() * X.shape[0])
        train_loss = float(torch.stack(losses).sum() / len(train_loader.dataset))
        model.eval()
        with torch.inference_mode():
            sums = torch.zeros(2)
            for X, y in valid_loader:
                X, y = X.to(device), y.to(device)
                y_hat = model(X)
                sums += torch.stack([criterion(y_hat, y) * len(y),
                                     (y_hat.argmax(-1) == y).sum().float()])
        n = len(valid_loader.dataset)
        history.append(dict(train_loss=train_loss, valid_loss=sums[0].item() / n,
                            valid_acc=sums[1].item() / n))
        model.train()
    return history


def fit_with_metrics(model, train_loader, valid_loader, criterion, optimizer, num_epochs, device):
    """d2l-style: an accumulator of (sum, count) pairs, extra keys in the dicts."""
    def run(loader, train):
        metric = [0.0, 0.0, 0]  # loss sum, correct, examples
        for X, y in loader:
            X, y = X.to(device), y.to(device)
            y_hat = model(X)
            loss = criterion(y_hat, y)
            if train:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            metric[0] += float(loss) * y.numel()
            metric[1] += float((y_hat.argmax(1) == y).sum())
            metric[2] += y.numel()
        return metric

    history = []
    for epoch in range(num_epochs):
        model.train()
        tl, tc, tn = run(train_loader, True)
        model.eval()
        with torch.no_grad():
            vl, vc, vn = run(valid_loader, False)
        history.append({"epoch": epoch, "train_loss": tl / tn, "train_acc": tc / tn,
                        "valid_loss": vl / vn, "valid_acc": vc / vn})
    model.train()
    return history


def fit_with_train_accuracy(model, train_loader, valid_loader, criterion, optimizer, num_epochs,
                            device):
    """Also the accuracy on the training set (an extra evaluation pass over train_loader)."""
    history = []
    for _ in range(num_epochs):
        train_loss = ref.train_one_epoch(model, train_loader, criterion, optimizer, device)
        model.eval()
        train_acc = ref.evaluate_accuracy(model, train_loader, device)
        with torch.no_grad():
            batches = [(criterion(model(X.to(device)), y.to(device)).item(), len(y))
                       for X, y in valid_loader]
        valid_loss = sum(l * n for l, n in batches) / sum(n for _, n in batches)
        history.append({"train_loss": train_loss, "train_acc": train_acc,
                        "valid_loss": valid_loss,
                        "valid_acc": ref.evaluate_accuracy(model, valid_loader, device)})
        model.train()
    return history


CORRECT = [
    ("ArrayDataset", ref.ArrayDataset),
    ("ArrayDataset", DatasetEager),
    ("ArrayDataset", DatasetInt),
    ("build_model", ref.build_model),
    ("build_model", build_model_dict),
    ("build_model", build_model_append),
    ("train_one_epoch", ref.train_one_epoch),
    ("train_one_epoch", train_epoch_set_to_none),
    ("train_one_epoch", train_epoch_dataset_len),
    ("evaluate_accuracy", ref.evaluate_accuracy),
    ("evaluate_accuracy", accuracy_flags),
    ("evaluate_accuracy", accuracy_try_finally),
    ("train_with_validation", ref.train_with_validation),
    ("train_with_validation", fit_with_helpers),
    ("train_with_validation", fit_inference_mode),
    ("train_with_validation", fit_with_metrics),
    ("train_with_validation", fit_with_train_accuracy),
]


# --- buggy variants -------------------------------------------------------------------------------------

class DatasetUnflattened(ref.ArrayDataset):
    def __getitem__(self, i):
        return self.X[i].float(), self.Y[i].long()


class DatasetFloatLabels(ref.ArrayDataset):
    def __getitem__(self, i):
        return self.X[i].reshape(-1).float(), self.Y[i].float()


class DatasetFloat64(ref.ArrayDataset):
    def __getitem__(self, i):
        return self.X[i].reshape(-1).double(), self.Y[i].long()


class DatasetLength(ref.ArrayDataset):
    def __len__(self):
        return self.X.numel()


class DatasetPlain:
    def __init__(self, X, Y):
        self.inner = ref.ArrayDataset(X, Y)

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        return self.inner[i]


def build_model_set(layer_sizes):
    layers = set()
    for i, (a, b) in enumerate(zip(layer_sizes, layer_sizes[1:])):
        layers.add(nn.Linear(a, b))
        if i < len(layer_sizes) - 2:
            layers.add(nn.ReLU())
    # iterating a set gives no particular order; here: grouped by type, as it often comes out
    # (sorted, so that the test itself is reproducible)
    return nn.Sequential(*sorted(layers, key=lambda m: (type(m).__name__, repr(m))))


def build_model_reversed(layer_sizes):
    model = ref.build_model(layer_sizes)
    linears = [m for m in model if isinstance(m, nn.Linear)][::-1]
    it = iter(linears)
    return nn.Sequential(*[next(it) if isinstance(m, nn.Linear) else m for m in model])


def build_model_relu_last(layer_sizes):
    return nn.Sequential(*ref.build_model(layer_sizes), nn.ReLU())


def build_model_no_relu(layer_sizes):
    return nn.Sequential(*[nn.Linear(a, b) for a, b in zip(layer_sizes, layer_sizes[1:])])


def train_no_zero_grad(model, loader, criterion, optimizer, device):
    return ref.train_one_epoch(model, loader, criterion, optimizer, device, zero_grad=False)


def train_no_train(model, loader, criterion, optimizer, device):
    return ref.train_one_epoch(model, loader, criterion, optimizer, device, set_train=False)


def train_step_first(model, loader, criterion, optimizer, device):
    return ref.train_one_epoch(model, loader, criterion, optimizer, device, step_first=True)


def train_per_batch(model, loader, criterion, optimizer, device):
    return ref.train_one_epoch(model, loader, criterion, optimizer, device, per_batch=True)


def train_not_moved(model, loader, criterion, optimizer, device):
    model.train()
    total, n = 0.0, 0
    for X, y in loader:
        X.to(device)
        y.to(device)
        optimizer.zero_grad()
        loss = criterion(model(X), y)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(y)
        n += len(y)
    return total / n


def train_zero_after_step(model, loader, criterion, optimizer, device):
    model.train()
    total, n = 0.0, 0
    for X, y in loader:
        X, y = X.to(device), y.to(device)
        loss = criterion(model(X), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        total += loss.item() * len(y)
        n += len(y)
    return total / n


def accuracy_no_eval(model, loader, device):
    was = model.training
    correct = count = 0
    with torch.no_grad():
        for X, y in loader:
            X, y = X.to(device), y.to(device)
            correct += (model(X).argmax(1) == y).sum().item()
            count += len(y)
    model.train(was)
    return correct / count


def accuracy_not_restored(model, loader, device):
    model.eval()
    correct = count = 0
    with torch.no_grad():
        for X, y in loader:
            X, y = X.to(device), y.to(device)
            correct += (model(X).argmax(1) == y).sum().item()
            count += len(y)
    return correct / count


def accuracy_always_train(model, loader, device):
    acc = accuracy_not_restored(model, loader, device)
    model.train()
    return acc


def accuracy_per_batch(model, loader, device):
    was = model.training
    model.eval()
    accs = []
    with torch.no_grad():
        for X, y in loader:
            X, y = X.to(device), y.to(device)
            accs.append((model(X).argmax(1) == y).float().mean().item())
    model.train(was)
    return sum(accs) / len(accs)


def accuracy_grad(model, loader, device):
    was = model.training
    model.eval()
    correct = count = 0
    for X, y in loader:
        X, y = X.to(device), y.to(device)
        correct += (model(X).argmax(1) == y).sum().item()
        count += len(y)
    model.train(was)
    return correct / count


def accuracy_count(model, loader, device):
    return ref.evaluate_accuracy(model, loader, device) * len(loader.dataset)


def _valid_pass(model, loader, criterion, device):
    total = correct = n = 0
    for X, y in loader:
        X, y = X.to(device), y.to(device)
        y_hat = model(X)
        total += criterion(y_hat, y).item() * len(y)
        correct += (y_hat.argmax(1) == y).sum().item()
        n += len(y)
    return total / n, correct / n


def fit_valid_in_train_mode(model, train_loader, valid_loader, criterion, optimizer, num_epochs,
                            device):
    history = []
    for _ in range(num_epochs):
        train_loss = ref.train_one_epoch(model, train_loader, criterion, optimizer, device)
        with torch.no_grad():
            valid_loss, valid_acc = _valid_pass(model, valid_loader, criterion, device)
        history.append({"train_loss": train_loss, "valid_loss": valid_loss,
                        "valid_acc": valid_acc})
    return history


def fit_valid_with_grad(model, train_loader, valid_loader, criterion, optimizer, num_epochs,
                        device):
    history = []
    for _ in range(num_epochs):
        train_loss = ref.train_one_epoch(model, train_loader, criterion, optimizer, device)
        model.eval()
        valid_loss, valid_acc = _valid_pass(model, valid_loader, criterion, device)
        model.train()
        history.append({"train_loss": train_loss, "valid_loss": valid_loss,
                        "valid_acc": valid_acc})
    return history


def fit_batch_means(model, train_loader, valid_loader, criterion, optimizer, num_epochs, device):
    return ref.train_with_validation(model, train_loader, valid_loader, criterion, optimizer,
                                     num_epochs, device, bug="per_batch")


def fit_valid_batch_means(model, train_loader, valid_loader, criterion, optimizer, num_epochs,
                          device):
    history = []
    for _ in range(num_epochs):
        train_loss = ref.train_one_epoch(model, train_loader, criterion, optimizer, device)
        model.eval()
        losses = []
        with torch.no_grad():
            for X, y in valid_loader:
                X, y = X.to(device), y.to(device)
                losses.append(criterion(model(X), y).item())
        acc = ref.evaluate_accuracy(model, valid_loader, device)
        model.train()
        history.append({"train_loss": train_loss, "valid_loss": sum(losses) / len(losses),
                        "valid_acc": acc})
    return history


def fit_left_in_eval(model, train_loader, valid_loader, criterion, optimizer, num_epochs,
                     device):
    history = []
    for _ in range(num_epochs):
        train_loss = ref.train_one_epoch(model, train_loader, criterion, optimizer, device)
        model.eval()
        with torch.no_grad():
            valid_loss, valid_acc = _valid_pass(model, valid_loader, criterion, device)
        history.append({"train_loss": train_loss, "valid_loss": valid_loss,
                        "valid_acc": valid_acc})
    return history


def fit_train_once(model, train_loader, valid_loader, criterion, optimizer, num_epochs, device):
    model.train()
    history = []
    for _ in range(num_epochs):
        total, n = 0.0, 0
        for X, y in train_loader:
            X, y = X.to(device), y.to(device)
            optimizer.zero_grad()
            loss = criterion(model(X), y)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
            n += len(y)
        model.eval()
        with torch.no_grad():
            valid_loss, valid_acc = _valid_pass(model, valid_loader, criterion, device)
        history.append({"train_loss": total / n, "valid_loss": valid_loss,
                        "valid_acc": valid_acc})
    model.train()
    return history


def fit_acc_count(model, train_loader, valid_loader, criterion, optimizer, num_epochs, device):
    history = ref.train_with_validation(model, train_loader, valid_loader, criterion, optimizer,
                                        num_epochs, device)
    return [dict(h, valid_acc=h["valid_acc"] * len(valid_loader.dataset)) for h in history]


def fit_acc_int_count(model, train_loader, valid_loader, criterion, optimizer, num_epochs,
                      device):
    history = ref.train_with_validation(model, train_loader, valid_loader, criterion, optimizer,
                                        num_epochs, device)
    return [dict(h, valid_acc=round(h["valid_acc"] * len(valid_loader.dataset)))
            for h in history]


def fit_step_in_valid(model, train_loader, valid_loader, criterion, optimizer, num_epochs,
                      device):
    return ref.train_with_validation(model, train_loader, valid_loader, criterion, optimizer,
                                     num_epochs, device, bug="step_in_valid")


def fit_valid_backward(model, train_loader, valid_loader, criterion, optimizer, num_epochs,
                       device):
    """The training loop copied for validation, backward and step included."""
    history = []
    for _ in range(num_epochs):
        train_loss = ref.train_one_epoch(model, train_loader, criterion, optimizer, device)
        model.eval()
        total = correct = n = 0
        for X, y in valid_loader:
            X, y = X.to(device), y.to(device)
            optimizer.zero_grad()
            y_hat = model(X)
            loss = criterion(y_hat, y)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
            correct += (y_hat.argmax(1) == y).sum().item()
            n += len(y)
        model.train()
        history.append({"train_loss": train_loss, "valid_loss": total / n,
                        "valid_acc": correct / n})
    return history


def fit_tensors(model, train_loader, valid_loader, criterion, optimizer, num_epochs, device):
    history = ref.train_with_validation(model, train_loader, valid_loader, criterion, optimizer,
                                        num_epochs, device)
    return [{k: torch.tensor(v) for k, v in h.items()} for h in history]


def fit_last_batch_loss(model, train_loader, valid_loader, criterion, optimizer, num_epochs,
                        device):
    return ref.train_with_validation(model, train_loader, valid_loader, criterion, optimizer,
                                     num_epochs, device, bug="last_batch")


def fit_valid_not_moved(model, train_loader, valid_loader, criterion, optimizer, num_epochs,
                        device):
    history = []
    for _ in range(num_epochs):
        train_loss = ref.train_one_epoch(model, train_loader, criterion, optimizer, device)
        model.eval()
        total = correct = n = 0
        with torch.no_grad():
            for X, y in valid_loader:
                X.to(device)
                y.to(device)
                y_hat = model(X)
                total += criterion(y_hat, y).item() * len(y)
                correct += (y_hat.argmax(1) == y).sum().item()
                n += len(y)
        model.train()
        history.append({"train_loss": train_loss, "valid_loss": total / n,
                        "valid_acc": correct / n})
    return history


def fit_last_epoch_only(model, train_loader, valid_loader, criterion, optimizer, num_epochs,
                        device):
    for _ in range(num_epochs):
        train_loss = ref.train_one_epoch(model, train_loader, criterion, optimizer, device)
        model.eval()
        with torch.no_grad():
            valid_loss, valid_acc = _valid_pass(model, valid_loader, criterion, device)
        model.train()
    return {"train_loss": train_loss, "valid_loss": valid_loss, "valid_acc": valid_acc}


def fit_valid_first(model, train_loader, valid_loader, criterion, optimizer, num_epochs,
                    device):
    history = []
    for _ in range(num_epochs):
        model.eval()
        with torch.no_grad():
            valid_loss, valid_acc = _valid_pass(model, valid_loader, criterion, device)
        train_loss = ref.train_one_epoch(model, train_loader, criterion, optimizer, device)
        history.append({"train_loss": train_loss, "valid_loss": valid_loss,
                        "valid_acc": valid_acc})
    return history


BUGGY = [
    ("ArrayDataset", DatasetUnflattened, "unflattened"),
    ("ArrayDataset", DatasetFloatLabels, "float labels"),
    ("ArrayDataset", DatasetFloat64, "float32"),
    ("ArrayDataset", DatasetLength, "number of examples"),
    ("ArrayDataset", DatasetPlain, "subclass torch.utils.data.Dataset"),
    ("build_model", build_model_set, "set does not keep the order"),
    ("build_model", build_model_reversed, "layers out of order"),
    ("build_model", build_model_relu_last, "ReLU after the last layer"),
    ("build_model", build_model_no_relu, "ReLU is missing"),
    ("train_one_epoch", train_no_zero_grad, "no zero_grad"),
    ("train_one_epoch", train_no_train, "no train()"),
    ("train_one_epoch", train_step_first, "step before backward"),
    ("train_one_epoch", train_per_batch, "per-batch averages"),
    ("train_one_epoch", train_not_moved, "X.to(device)"),
    ("train_one_epoch", train_zero_after_step, "old gradients"),
    ("evaluate_accuracy", accuracy_no_eval, "no eval()"),
    ("evaluate_accuracy", accuracy_not_restored, "mode not restored"),
    ("evaluate_accuracy", accuracy_always_train, "mode not restored"),
    ("evaluate_accuracy", accuracy_per_batch, "per-batch averages"),
    ("evaluate_accuracy", accuracy_grad, "no_grad"),
    ("evaluate_accuracy", accuracy_count, "not the fraction"),
    ("train_with_validation", fit_valid_in_train_mode, "no eval()"),
    ("train_with_validation", fit_valid_with_grad, "no_grad"),
    ("train_with_validation", fit_batch_means, "mean of the batch means"),
    ("train_with_validation", fit_valid_batch_means, "per-batch averages"),
    ("train_with_validation", fit_left_in_eval, "model left in evaluation mode"),
    ("train_with_validation", fit_train_once, "model.train() only once"),
    ("train_with_validation", fit_acc_count, "not the fraction"),
    ("train_with_validation", fit_acc_int_count, "not the fraction"),
    ("train_with_validation", fit_step_in_valid, "optimizer step in the validation pass"),
    ("train_with_validation", fit_valid_backward, "no_grad"),
    ("train_with_validation", fit_tensors, "floats in the dicts"),
    ("train_with_validation", fit_last_batch_loss, "last batch only"),
    ("train_with_validation", fit_valid_not_moved, "X.to(device)"),
    ("train_with_validation", fit_last_epoch_only, "one dict per epoch"),
    ("train_with_validation", fit_valid_first, "validate after training"),
]


# === fix-the-bug exercises ===========================================================================

import functools  # noqa: E402

import numpy as np  # noqa: E402

P = functools.partial


def test_log_mse_loss_keeps_a_gradient_below_the_clamp():
    p = torch.tensor([0.5, -2.0, 3.0], requires_grad=True)
    ref.log_mse_loss(p, torch.tensor([10.0, 10.0, 10.0])).backward()
    assert (p.grad != 0).all() and (p.grad < 0).all()
    q = torch.tensor([0.5, -2.0, 3.0], requires_grad=True)
    ref.log_mse_clamped(q, torch.tensor([10.0, 10.0, 10.0])).backward()
    assert q.grad[:2].eq(0).all(), "the original bug: no gradient below the clamp"


def test_backward_twice_is_the_error_students_see():
    spec = [("Linear", [3, 4], {}), ("Tanh", [], {}), ("Linear", [4, 1], {})]
    obs = ref._obs_two_losses(spec, None, torch.randn(5, 3), torch.randn(5, 1), False,
                              impl=ref.two_losses_twice)
    assert "backward through the graph a second time" in obs["error"]


# a. predict
def predict_inference_mode(model, X):
    mode = model.training
    model.train(False)
    try:
        with torch.inference_mode():
            out = model(X)
        return out.clone()
    finally:
        model.train(mode)


def predict_decorated(model, X):
    @torch.no_grad()
    def forward():
        return model(X)
    was = model.training
    model.eval()
    y_hat = forward()
    if was:
        model.train()
    return y_hat


# b. two losses
def two_losses_retain(model, X, y):
    y_hat = model(X)
    a = nn.functional.mse_loss(y_hat, y)
    b = y_hat.pow(2).mean()
    a.backward(retain_graph=True)
    b.backward()
    return float(a), float(b)


def two_losses_autograd_grad(model, X, y):
    y_hat = model(X)
    a = ((y_hat - y) ** 2).mean()
    b = (y_hat * y_hat).mean()
    params = list(model.parameters())
    grads = torch.autograd.grad(a + b, params)
    for p, g in zip(params, grads):
        p.grad = g if p.grad is None else p.grad + g
    return a.item(), b.item()


# c. epoch orders
def orders_argsort(dataset_size, num_epochs, generator=None):
    return torch.stack([torch.rand(dataset_size, generator=generator).argsort()
                        for _ in range(num_epochs)])


def orders_tensors(dataset_size, num_epochs, generator=None):
    out = []
    for _ in range(num_epochs):
        out.append(torch.randperm(dataset_size, generator=generator))
    return out


# d. log_mse_loss
def log_mse_where_clamped(preds, labels):
    f = torch.where(preds >= 1, torch.log(preds.clamp(min=1)), preds - 1)
    return torch.mean((f - labels.log()) ** 2)


def log_mse_relu(preds, labels):
    below = torch.relu(1 - preds)
    return ((torch.log(preds + below) - below - torch.log(labels)) ** 2).mean()


# e. fit_log_price
def fit_log_price_autograd(X, prices, lr, num_steps):
    w = torch.zeros(X.shape[1], 1, dtype=X.dtype, requires_grad=True)
    b = torch.zeros(1, dtype=X.dtype, requires_grad=True)
    y = torch.log(prices)
    for _ in range(num_steps):
        loss = ((X @ w + b - y) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            w -= lr * w.grad
            b -= lr * b.grad
            w.grad.zero_()
            b.grad.zero_()
    with torch.no_grad():
        return torch.exp(X @ w + b)


def fit_log_price_module(X, prices, lr, num_steps):
    net = nn.Linear(X.shape[1], 1).to(X.dtype)
    nn.init.zeros_(net.weight)
    nn.init.zeros_(net.bias)
    for _ in range(num_steps):
        net.zero_grad()
        nn.functional.mse_loss(net(X), prices.log()).backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= lr * p.grad
    return net(X).detach().exp()


# f. init_small_
def init_small_apply(net):
    def init(m):
        if type(m) is nn.Linear:
            with torch.no_grad():
                m.weight.copy_(torch.randn_like(m.weight) * 0.01)
                m.bias.zero_()
    net.apply(init)


def init_small_named(net):
    for name, p in net.named_parameters():
        if name.endswith("weight"):
            nn.init.normal_(p, std=0.01)
        else:
            nn.init.constant_(p, 0.0)
    return net


# g. WindowDataset
class WindowUnfold(data.Dataset):
    def __init__(self, series, window):
        self.X = series.unfold(0, window, 1)[:-1] if len(series) > window else series[:0]
        self.y = series[window:]

    def __len__(self):
        return self.y.shape[0]

    def __getitem__(self, idx):
        return self.X[idx], self.y[idx]


class WindowLists(data.Dataset):
    def __init__(self, series, window):
        self.pairs = [(series[i:i + window], series[i + window])
                      for i in range(len(series) - window)]

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        return self.pairs[i]


# h. parameters_once
def parameters_seen(*modules):
    out, seen = [], set()
    for m in modules:
        for p in m.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def parameters_container(*modules):
    return list(nn.ModuleList(modules).parameters())


# i. to_device
def to_device_match(batch, device):
    match batch:
        case torch.Tensor():
            return batch.to(device)
        case tuple():
            return tuple(to_device_match(b, device) for b in batch)
        case list():
            return [to_device_match(b, device) for b in batch]
        case dict():
            return {k: to_device_match(v, device) for k, v in batch.items()}
        case _:
            return batch


def to_device_tree(batch, device):
    from torch.utils._pytree import tree_map
    return tree_map(lambda x: x.to(device) if isinstance(x, torch.Tensor) else x, batch)


# j. train_step
def train_step_none(model, X, y, criterion, optimizer):
    for p in model.parameters():
        p.grad = None
    y_hat = model(X)
    loss = criterion(y_hat, y)
    loss.backward()
    optimizer.step()
    return float(loss)


def train_step_detached(model, X, y, criterion, optimizer):
    optimizer.zero_grad(set_to_none=False)
    loss = criterion(model(X), y)
    loss.backward()
    optimizer.step()
    return loss.detach().item()


# k. accumulate_and_step
def accumulate_sum_reduction(model, micro_batches, criterion, optimizer):
    optimizer.zero_grad()
    n = sum(X.shape[0] for X, _ in micro_batches)
    total = 0.0
    for X, y in micro_batches:
        s = nn.functional.mse_loss(model(X), y, reduction="sum") / y.shape[1]
        (s / n).backward()
        total += s.item()
    optimizer.step()
    return total / n


def accumulate_one_graph(model, micro_batches, criterion, optimizer):
    optimizer.zero_grad(set_to_none=True)
    sizes = [len(X) for X, _ in micro_batches]
    losses = [criterion(model(X), y) for X, y in micro_batches]
    total = sum(l * k for l, k in zip(losses, sizes)) / sum(sizes)
    total.backward()
    optimizer.step()
    return total.item()


# l. evaluate_loss
def evaluate_loss_try(model, loader, criterion, device):
    was = model.training
    model.eval()
    try:
        with torch.inference_mode():
            parts = [(criterion(model(X.to(device)), y.to(device)) * len(y), len(y))
                     for X, y in loader]
        return float(sum(p for p, _ in parts) / sum(n for _, n in parts))
    finally:
        model.train(was)


def evaluate_loss_sum(model, loader, criterion, device):
    mode = model.training
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for X, y in loader:
            X, y = X.to(device), y.to(device)
            total += nn.functional.cross_entropy(model(X), y, reduction="sum").item()
            n += y.numel()
    model.train(mode)
    return total / n


# m. frame_to_tensor
def frame_astype(df):
    return torch.tensor(df.astype("float32").values)


def frame_columns(df):
    return torch.stack([torch.as_tensor(df[c].to_numpy().astype(np.float32)) for c in df.columns],
                       dim=1)


# n. report_log_rmse
def report_fixed_name(preds, labels):
    rmse = torch.sqrt(torch.mean((torch.log(preds.clamp(min=1)) - torch.log(labels)) ** 2))
    return rmse.item()


def report_numpy(preds, labels):
    p = np.maximum(preds.detach().double().numpy(), 1)
    return float(np.sqrt(np.mean((np.log(p) - np.log(labels.double().numpy())) ** 2)))


CORRECT += [
    ("predict", ref.predict), ("predict", predict_inference_mode), ("predict", predict_decorated),
    ("backward_two_losses", ref.backward_two_losses),
    ("backward_two_losses", two_losses_retain),
    ("backward_two_losses", two_losses_autograd_grad),
    ("epoch_orders", ref.epoch_orders), ("epoch_orders", orders_argsort),
    ("epoch_orders", orders_tensors),
    ("log_mse_loss", ref.log_mse_loss), ("log_mse_loss", log_mse_where_clamped),
    ("log_mse_loss", log_mse_relu),
    ("fit_log_price", ref.fit_log_price), ("fit_log_price", fit_log_price_autograd),
    ("fit_log_price", fit_log_price_module),
    ("init_small_", ref.init_small_), ("init_small_", init_small_apply),
    ("init_small_", init_small_named),
    ("WindowDataset", ref.WindowDataset), ("WindowDataset", WindowUnfold),
    ("WindowDataset", WindowLists),
    ("parameters_once", ref.parameters_once), ("parameters_once", parameters_seen),
    ("parameters_once", parameters_container),
    ("to_device", ref.to_device), ("to_device", to_device_match), ("to_device", to_device_tree),
    ("train_step", ref.train_step), ("train_step", train_step_none),
    ("train_step", train_step_detached),
    ("accumulate_and_step", ref.accumulate_and_step),
    ("accumulate_and_step", accumulate_sum_reduction),
    ("accumulate_and_step", accumulate_one_graph),
    ("evaluate_loss", ref.evaluate_loss), ("evaluate_loss", evaluate_loss_try),
    ("evaluate_loss", evaluate_loss_sum),
    ("frame_to_tensor", ref.frame_to_tensor), ("frame_to_tensor", frame_astype),
    ("frame_to_tensor", frame_columns),
    ("report_log_rmse", ref.report_log_rmse), ("report_log_rmse", report_fixed_name),
    ("report_log_rmse", report_numpy),
]


def parameters_real_set(*modules):
    return list({p for m in modules for p in m.parameters()})


def window_getitem_only(series, window):
    return ref.WindowGetitemTypo(series, window)


BUGGY += [
    ("predict", ref.predict_eval_only, "model.eval() alone"),
    ("predict", ref.predict_detached, ".detach() after the forward pass"),
    ("predict", ref.predict_no_grad_only, "torch.no_grad() alone"),
    ("predict", ref.predict_not_restored, "mode not restored"),
    ("backward_two_losses", ref.two_losses_twice, "backward twice through one graph"),
    ("backward_two_losses", ref.two_losses_first_only, "only data_loss's gradient"),
    ("backward_two_losses", ref.two_losses_halved, "halves the gradients"),
    ("backward_two_losses", ref.two_losses_zeroed, "were erased"),
    ("backward_two_losses", ref.two_losses_two_forwards, "two forward passes"),
    ("epoch_orders", ref.orders_shuffled_once, "shuffled once"),
    ("epoch_orders", ref.orders_unshuffled, "no shuffling"),
    ("epoch_orders", ref.orders_global, "the global random generator"),
    ("epoch_orders", ref.orders_with_replacement, "draws with replacement"),
    ("epoch_orders", ref.orders_rotated, "rotated"),
    ("log_mse_loss", ref.log_mse_clamped, "clamp's gradient is zero below the clamp"),
    ("log_mse_loss", ref.log_mse_where, "torch.where evaluates both branches"),
    ("log_mse_loss", ref.log_mse_jump, "must meet log at 1"),
    ("log_mse_loss", ref.log_mse_rooted, "the square root of the mean"),
    ("fit_log_price", P(ref.fit_log_price, log=None, exp=None), "trained on raw prices"),
    ("fit_log_price", P(ref.fit_log_price, exp=None), "predictions in log units"),
    ("fit_log_price", P(ref.fit_log_price, half=True), "a factor 1/2"),
    ("init_small_", ref._init_with(std=10.0), "a standard deviation of 10"),
    ("init_small_", ref._init_with(std=0.1), "not the variance"),
    ("init_small_", ref._init_with(uniform=True), "a uniform distribution"),
    ("init_small_", ref._init_with(bias=False), "biases left"),
    ("init_small_", ref._init_with(nested=False), "net.children()"),
    ("WindowDataset", ref.WindowTypos, "misspelt special methods"),
    ("WindowDataset", window_getitem_only, "`__getitem` is not `__getitem__`"),
    ("WindowDataset", ref.WindowLenTypo, "__len__"),
    ("WindowDataset", ref.WindowLength, "len(series) - window"),
    ("parameters_once", parameters_real_set, "a set has no order"),
    ("parameters_once", ref.parameters_chained, "a shared tensor twice"),
    ("to_device", ref.to_device_unassigned, "returns a moved copy"),
    ("to_device", ref.to_device_list, "a list where a tuple was"),
    ("to_device", ref.to_device_flat, "nested containers"),
    ("train_step", ref.train_step_typo, "backword"),
    ("train_step", P(ref.train_step, zero=False), "no zero_grad"),
    ("train_step", P(ref.train_step, step_first=True), "step before backward"),
    ("train_step", P(ref.train_step, item=False), "loss.item()"),
    ("accumulate_and_step", P(ref.accumulate_and_step, bug="no_zero"), "no zero_grad first"),
    ("accumulate_and_step", P(ref.accumulate_and_step, bug="zero_inside"),
     "zero_grad inside the loop"),
    ("accumulate_and_step", P(ref.accumulate_and_step, bug="step_each"),
     "a step per micro-batch"),
    ("accumulate_and_step", P(ref.accumulate_and_step, bug="unweighted"),
     "unweighted micro-batches"),
    ("evaluate_loss", P(ref.evaluate_loss, eval_mode=False), "no eval()"),
    ("evaluate_loss", P(ref.evaluate_loss, no_grad=False), "torch.no_grad()"),
    ("evaluate_loss", P(ref.evaluate_loss, restore=False), "mode not restored"),
    ("evaluate_loss", P(ref.evaluate_loss, per_batch=True), "per-batch averages"),
    ("frame_to_tensor", ref.frame_object_array, "NumPy array of Python objects"),
    ("frame_to_tensor", lambda df: torch.tensor(df.astype(float).to_numpy()), "float64"),
    ("frame_to_tensor", lambda df: torch.tensor(df.select_dtypes("number").to_numpy(
        dtype=np.float32)), "bool columns were dropped"),
    ("report_log_rmse", ref.report_misspelt, "a misspelt name"),
    ("report_log_rmse", lambda p, y: torch.sqrt(torch.mean(
        (torch.log(p.clamp(min=1)) - torch.log(y)) ** 2)), ".item()"),
    ("report_log_rmse", lambda p, y: torch.sqrt(torch.mean(
        (torch.log(p) - torch.log(y)) ** 2)).item(), "no clamp"),
]
