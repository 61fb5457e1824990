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
