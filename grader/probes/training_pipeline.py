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
