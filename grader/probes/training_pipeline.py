"""09_training_pipeline: input objects built in the student's kernel, and what they observe.

Public: this runs where the student's code runs. It makes inputs (loaders, a loss, gradients
left on a model, a DataLoader around the student's dataset) and records what happens to them
as plain data; it holds no reference and no expected value: the judge compares.

- batches come as `Unmoved` tensors: `.to(...)` gives a plain tensor, so a batch that reaches
  the model (or the loss) still `Unmoved` was never moved (`X.to(device)` without assignment),
  even on a CPU;
- a `Watcher` records at every forward pass of a model its mode, whether autograd records,
  whether the batch was moved, its size, the loader it came from and a checksum of the
  parameters (so an update between two forward passes shows);
- `snapshot` reads a model's mode and parameters back.
"""

from __future__ import annotations

import torch
from torch.utils import data

from grader.observe import builder


class Unmoved(torch.Tensor):
    """A batch as the loader yields it; moving it (`.to`, `.cuda`) gives a plain tensor."""

    __torch_function__ = torch._C._disabled_torch_function_impl

    def to(self, *args, **kwargs):
        return self.as_subclass(torch.Tensor).to(*args, **kwargs)

    def cuda(self, *args, **kwargs):
        return self.as_subclass(torch.Tensor).cuda(*args, **kwargs)


class Tracker:
    """Which loader gave the last batch ("train", "valid", ...)."""

    def __init__(self):
        self.phase: str | None = None


class _Collate:
    def __init__(self, tracker: Tracker | None, name: str):
        self.tracker, self.name = tracker, name

    def __call__(self, batch):
        if self.tracker is not None:
            self.tracker.phase = self.name
        X = torch.stack([b[0] for b in batch]).as_subclass(Unmoved)
        y = torch.stack([b[1] for b in batch]).as_subclass(Unmoved)
        return X, y


@builder("training_pipeline.tracker")
def build_tracker() -> Tracker:
    return Tracker()


@builder("training_pipeline.loader")
def build_loader(X, y, batch_size: int, tracker: Tracker | None = None, name: str = "train"):
    """Batches (X, y) in order, as `Unmoved` tensors; `tracker` notes the loader's `name`."""
    return data.DataLoader(data.TensorDataset(X, y), batch_size=batch_size, shuffle=False,
                           collate_fn=_Collate(tracker, name))


@builder("training_pipeline.dataloader")
def build_dataloader(dataset, batch_size: int):
    """A plain DataLoader around the student's dataset (iterate it with a guarded request)."""
    return data.DataLoader(dataset, batch_size=batch_size, shuffle=False)


def _checksum(module: torch.nn.Module) -> float:
    with torch.no_grad():
        flat = [p.detach().reshape(-1).double() for p in module.parameters()]
        if not flat:
            return 0.0
        v = torch.cat(flat)
        # weighted, so that updates summing to zero (the last layer under cross-entropy) show
        w = torch.linspace(1.0, 2.0, v.numel(), dtype=torch.float64)
        return float((v * w).sum() + (v * v).sum())


class Watcher:
    """Records, at every forward pass of `module`, what the judge needs to know."""

    def __init__(self, module: torch.nn.Module, tracker: Tracker | None = None):
        self.seen: list[dict] = []
        self.tracker = tracker
        self.hook = module.register_forward_pre_hook(self._pre)

    def _pre(self, module, inputs):
        x = inputs[0] if inputs else None
        self.seen.append({
            "training": bool(module.training),
            "grad_enabled": bool(torch.is_grad_enabled()),
            "unmoved": isinstance(x, Unmoved),
            "batch": int(x.shape[0]) if isinstance(x, torch.Tensor) and x.dim() else -1,
            "phase": self.tracker.phase if self.tracker is not None else None,
            "params": _checksum(module),
        })

    def records(self) -> list[dict]:
        return [dict(r) for r in self.seen]

    def remove(self) -> None:
        self.hook.remove()


@builder("training_pipeline.watch")
def build_watcher(module, tracker: Tracker | None = None) -> Watcher:
    return Watcher(module, tracker)


class WatchedLoss(torch.nn.Module):
    """Cross-entropy, the mean over the batch (as nn.CrossEntropyLoss()); notes unmoved batches."""

    def __init__(self):
        super().__init__()
        self.unmoved = False
        self.calls = 0

    def forward(self, y_hat, y):
        self.calls += 1
        self.unmoved = self.unmoved or isinstance(y, Unmoved) or isinstance(y_hat, Unmoved)
        return torch.nn.functional.cross_entropy(y_hat, y)


@builder("training_pipeline.criterion")
def build_criterion() -> WatchedLoss:
    return WatchedLoss()


@builder("training_pipeline.set_grads")
def set_grads(module: torch.nn.Module, value: float) -> None:
    """Leave old gradients on every parameter (as a previous training step would)."""
    for p in module.parameters():
        p.grad = torch.full_like(p, value)


@builder("training_pipeline.snapshot")
def snapshot(module: torch.nn.Module) -> dict:
    """The model's mode and parameters, as plain data."""
    try:
        training = bool(torch.nn.Module.__getattribute__(module, "training"))
        state = {str(k): v.detach().clone().cpu()
                 for k, v in torch.nn.Module.state_dict(module).items()}
        return {"training": training, "state": state}
    except Exception as exc:  # noqa: BLE001 - the model was broken by the code it was given to
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}


# --- the fix-the-bug exercises: one harness, one method per exercise -------------------------
#
# Each method builds the inputs, calls the function it is given (the student's in grading, the
# instructor's reference or a known mistake when the judge asks what those do), and reports
# what happened as plain data: an error as text, the mode and grad state at each forward pass,
# gradients, parameters. A notebook's unfinished answer (NotImplementedError) is passed on.

def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:400]


def _attempt(fn, *args):
    """(fn(*args), None), or (None, the error as text)."""
    try:
        return fn(*args), None
    except NotImplementedError as exc:
        if "Subclasses of Dataset" in str(exc):  # torch's Dataset.__getitem__, not a stub
            return None, _error(exc)
        raise
    except Exception as exc:  # noqa: BLE001 - the code under test may raise anything
        return None, _error(exc)


def kind(x) -> str:
    """A short description of a value's type: 'Tensor float32 (3, 2)', 'float', '(float, int)'."""
    if type(x) is torch.Tensor:
        return f"Tensor {str(x.dtype).replace('torch.', '')} {tuple(x.shape)}"
    if type(x) is tuple:
        return "(" + ", ".join(kind(v) for v in x) + ("," if len(x) == 1 else "") + ")"
    return type(x).__name__ if x is not None else "None"


def _number(x):
    if type(x) is torch.Tensor and x.numel() == 1:
        return float(x.detach())
    if type(x) in (int, float):
        return float(x)
    return None


class _Forwards:
    """The mode and grad state of `module` at each forward pass, and whether the batch was moved."""

    def __init__(self, module):
        self.seen: list[tuple[bool, bool, bool]] = []
        self.hook = module.register_forward_pre_hook(self._pre)

    def _pre(self, module, inputs):
        x = inputs[0] if inputs else None
        self.seen.append((bool(module.training), bool(torch.is_grad_enabled()),
                          isinstance(x, Unmoved)))

    def done(self) -> dict:
        self.hook.remove()
        return {"forward_training": [s[0] for s in self.seen],
                "forward_grad": [s[1] for s in self.seen]}


def _params(module) -> list:
    return [p.detach().clone() for p in module.parameters()]


class _CountedStep:
    def __init__(self, optimizer):
        self.optimizer, self.count = optimizer, 0
        self.step = optimizer.step

    def __call__(self, *args, **kwargs):
        self.count += 1
        return self.step(*args, **kwargs)


def _describe(x, depth: int = 0):
    """A batch's structure: containers, and for each tensor its device, shape, dtype, values."""
    if depth > 6:
        return ["deep"]
    if isinstance(x, torch.Tensor):
        values = x.detach().clone() if x.device.type == "cpu" and type(x) is torch.Tensor else None
        return ["tensor", x.device.type, list(x.shape), str(x.dtype).replace("torch.", ""), values]
    if type(x) in (list, tuple):
        return [type(x).__name__, [_describe(v, depth + 1) for v in x]]
    if type(x) is dict:
        return ["dict", [[str(k), _describe(v, depth + 1)] for k, v in x.items()]]
    if x is None or type(x) in (int, float, str, bool):
        return ["value", x]
    return [type(x).__name__]


def _rows(x):
    """A list of epochs' orders as lists of ints, or None."""
    try:
        if isinstance(x, torch.Tensor):
            x = x.tolist()
        out = []
        for row in x:
            row = row.tolist() if isinstance(row, torch.Tensor) else list(row)
            if not all(type(i) is int for i in row):
                return None
            out.append(row)
        return out
    except Exception:  # noqa: BLE001 - not a list of orders
        return None


class BugProbe:
    """Runs a function on inputs made here; reports what happened (see the section comment)."""

    def predict(self, fn, spec, state, training: bool, X, seed: int) -> dict:
        from grader.observe import build_sequential
        model = build_sequential(spec, state, training)
        forwards = _Forwards(model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out, err = _attempt(fn, model, X)
        obs = {"error": err, **forwards.done(), "returns": kind(out)}
        obs["requires_grad"] = bool(out.requires_grad) if type(out) is torch.Tensor else None
        obs["training_after"] = bool(model.training)
        obs["output"] = out.detach().clone() if type(out) is torch.Tensor else None
        return obs

    def two_losses(self, fn, spec, state, X, y, stale: bool) -> dict:
        from grader.observe import build_sequential
        model = build_sequential(spec, state, True)
        if stale:
            set_grads(model, 0.5)
        forwards = _Forwards(model)
        out, err = _attempt(fn, model, X, y)
        n = len(forwards.done()["forward_training"])
        losses = [_number(v) for v in out] if type(out) in (tuple, list) else None
        return {"error": err, "returns": kind(out), "losses": losses, "forward_passes": n,
                "grads": [None if p.grad is None else p.grad.detach().clone()
                          for p in model.parameters()]}

    def orders(self, fn, n: int, num_epochs: int, seed: int) -> dict:
        runs = []
        for global_seed in (1, 2):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(global_seed)
                out, err = _attempt(fn, n, num_epochs, torch.Generator().manual_seed(seed))
            if err:
                return {"error": err}
            runs.append(_rows(out))
        rows = runs[0]
        if rows is None:
            return {"error": None, "returns": "not a list of orders"}
        perms = all(sorted(r) == list(range(n)) for r in rows)
        position = [0] * n
        follows = 0
        if perms:
            for r in rows:
                position[r.index(0)] += 1
                i = r.index(0)
                follows += int(i + 1 < n and r[i + 1] == 1)
        return {"error": None, "returns": "a list of orders", "epochs": len(rows),
                "permutations": perms,
                "in_index_order": all(r == list(range(n)) for r in rows),
                "new_order_every_epoch": len({tuple(r) for r in rows}) == len(rows),
                "same_with_same_generator_seed": runs[0] == runs[1],
                "stats": {"position_of_0": position, "1_right_after_0": follows}}

    def loss_and_grad(self, fn, preds, labels) -> dict:
        p = preds.detach().clone().requires_grad_(True)
        out, err = _attempt(fn, p, labels)
        if err:
            return {"error": err}
        obs = {"error": None, "returns": kind(out),
               "value": out.detach().clone() if type(out) is torch.Tensor else None}
        grad = None
        if type(out) is torch.Tensor and out.requires_grad and out.numel() == 1:
            _, back = _attempt(lambda: out.backward())
            grad = p.grad.detach().clone() if back is None and p.grad is not None else None
        obs["grad"] = grad if grad is not None else torch.zeros_like(preds)
        return obs

    def init(self, fn, spec, nested: bool, seed: int) -> dict:
        from grader.observe import build_sequential
        net = build_sequential(spec)
        with torch.no_grad():
            for p in net.parameters():
                p.normal_(0.0, 10.0, generator=torch.Generator().manual_seed(seed + 1))
        if nested:  # the first two layers inside a block of their own
            net = torch.nn.Sequential(torch.nn.Sequential(*list(net)[:2]), *list(net)[2:])
        linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
        before = [m.weight.detach().clone() for m in linears]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _, err = _attempt(fn, net)
        if err:
            return {"error": err}
        layers = []
        for m, w0 in zip(linears, before):
            w = m.weight.detach().double().reshape(-1)
            m2 = float((w * w).mean())
            layers.append({"shape": list(m.weight.shape), "n": w.numel(),
                           "mean": float(w.mean()), "m2": m2,
                           "kurtosis": float((w ** 4).mean() / m2 ** 2) if m2 > 0 else 0.0,
                           "changed": not torch.equal(m.weight.detach(), w0),
                           "bias_max": float(m.bias.detach().abs().max())
                           if m.bias is not None else 0.0})
        return {"error": None, "layers": layers}

    def dataset(self, cls, series, window: int, indices: list) -> dict:
        ds, err = _attempt(cls, series, window)
        if err:
            return {"error": err}
        obs = {"error": None, "is_dataset": isinstance(ds, data.Dataset)}
        length, err = _attempt(len, ds)
        if err:
            return {**obs, "error": err}
        obs["len"] = length
        items = []
        for i in indices:
            item, err = _attempt(lambda i=i: ds[i])
            if err:
                return {**obs, "error": err}
            items.append([kind(item)] + ([v.detach().clone() if type(v) is torch.Tensor else v
                                          for v in item] if type(item) is tuple else []))
        obs["items"] = items
        batch, err = _attempt(lambda: next(iter(data.DataLoader(ds, batch_size=4))))
        if err:
            return {**obs, "error": err}
        obs["first_batch"] = kind(tuple(batch)) if type(batch) in (list, tuple) else kind(batch)
        return obs

    def parameters_once(self, fn, specs: list, ties: list) -> dict:
        from grader.observe import build_sequential
        modules = [build_sequential(spec) for spec in specs]
        for (i, name_i), (j, name_j) in ties:  # module j uses module i's tensor
            owner, attr = name_j.rsplit(".", 1)
            setattr(modules[j].get_submodule(owner), attr,
                    modules[i].get_parameter(name_i))
        order = []
        for m in modules:
            for p in m.parameters():
                if not any(p is q for q in order):
                    order.append(p)
        out, err = _attempt(fn, *modules)
        if err:
            return {"error": err}
        items = list(out) if type(out) in (list, tuple) else None
        found = [next((k for k, q in enumerate(order) if v is q), -1) for v in items or []]
        return {"error": None, "returns": type(out).__name__,
                "all_parameters": items is not None and set(found) == set(range(len(order))),
                "each_once": items is not None and len(found) == len(set(found)),
                "in_order": items is not None and found == sorted(found)}

    def to_device(self, fn, batch, device: str) -> dict:
        out, err = _attempt(fn, batch, torch.device(device))
        if err:
            return {"error": err}
        return {"error": None, "result": _describe(out)}

    def train_step(self, fn, spec, state, X, y, lr: float, stale: bool) -> dict:
        from grader.observe import build_sequential
        model = build_sequential(spec, state, True)
        if stale:
            set_grads(model, 0.5)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        out, err = _attempt(fn, model, X, y, torch.nn.MSELoss(), optimizer)
        if err:
            return {"error": err}
        return {"error": None, "returns": kind(out), "loss": _number(out),
                "parameters": _params(model)}

    def accumulate(self, fn, spec, state, micro_batches: list, lr: float, stale: bool) -> dict:
        from grader.observe import build_sequential
        model = build_sequential(spec, state, True)
        if stale:
            set_grads(model, 0.5)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        counter = _CountedStep(optimizer)
        optimizer.step = counter
        out, err = _attempt(fn, model, [tuple(b) for b in micro_batches], torch.nn.MSELoss(),
                            optimizer)
        if err:
            return {"error": err}
        return {"error": None, "returns": kind(out), "steps": counter.count,
                "loss": _number(out), "parameters": _params(model)}

    def eval_loss(self, fn, spec, state, X, y, batch_size: int, training: bool,
                  seed: int) -> dict:
        from grader.observe import build_sequential
        model = build_sequential(spec, state, training)
        forwards = _Forwards(model)
        loader = build_loader(X, y, batch_size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out, err = _attempt(fn, model, loader, torch.nn.CrossEntropyLoss(),
                                torch.device("cpu"))
        seen = forwards.seen
        obs = {"error": err, **forwards.done(), "unmoved": any(s[2] for s in seen),
               "returns": kind(out) if _number(out) is None else "a number",
               "training_after": bool(model.training), "loss": _number(out)}
        obs["parameters"] = _params(model)
        return obs


@builder("training_pipeline.bug_probe")
def build_bug_probe() -> BugProbe:
    return BugProbe()
