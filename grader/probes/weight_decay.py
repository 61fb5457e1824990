"""04_weight_decay: input objects built in the student's kernel, and what they observe.

Public: this runs where the student's code runs. It holds no reference and no expected value;
the judge compares what it reports.

- ``weight_decay.net(kind, params)``: one of the nets `weight_decay_sgd` is given (``NETS``),
  with the given parameter values;
- ``weight_decay.sgd_probe(net)``: reads an optimizer over `net` back as plain data
  (``describe``: its parameter groups, by parameter name) and steps it with given gradients
  (``step``: the parameters after `opt.step()`);
- ``weight_decay.grad_probe(fn)``: ``probe(w)`` calls ``fn`` on a copy of `w` that requires
  grad, back-propagates its result and reports whether it was differentiable and the
  gradient that reached `w`.
"""

from __future__ import annotations

import torch
from torch import nn

from grader import wire
from grader.observe import builder


class TwoLayer(nn.Module):
    """An MLP written as a class, with a parameter that belongs to no nn.Linear."""

    def __init__(self):
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(3, 6), nn.Linear(6, 2)
        self.scale = nn.Parameter(torch.ones(2))

    def forward(self, X):
        return self.lin2(torch.relu(self.lin1(X))) * self.scale


class Embedder(nn.Module):
    """An embedding table, then an nn.Linear head."""

    def __init__(self):
        super().__init__()
        self.embedding, self.head = nn.Embedding(10, 4), nn.Linear(4, 3)

    def forward(self, idx):
        return self.head(self.embedding(idx))


NETS = {
    "one_linear": lambda: nn.Sequential(nn.Linear(2, 1)),
    "three_linear": lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                                          nn.Linear(8, 3)),
    "nested": lambda: nn.Sequential(nn.Sequential(nn.Linear(3, 5), nn.ReLU()),
                                    nn.Sequential(nn.Linear(5, 5), nn.Tanh(),
                                                  nn.Sequential(nn.Linear(5, 2)))),
    "two_layer_class": TwoLayer,
    "batchnorm": lambda: nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(),
                                       nn.Linear(6, 2)),
    "embedder": Embedder,
    "no_bias_float64": lambda: nn.Sequential(nn.Linear(5, 3, bias=False),
                                             nn.Linear(3, 1)).double(),
}


def make_net(kind: str, params: dict | None = None) -> nn.Module:
    """The net `kind` of NETS, its parameters set to `params` ({name: tensor}) when given."""
    if kind not in NETS:
        raise ValueError(f"unknown net {kind!r}")
    net = NETS[kind]()
    if params:
        with torch.no_grad():
            for name, p in net.named_parameters():
                p.copy_(params[name])
    return net


@builder("weight_decay.net")
def build_net(kind: str, params: dict | None = None) -> nn.Module:
    return make_net(kind, params)


def _number(v):
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        v = v.item()
    if isinstance(v, bool):
        return v
    return float(v) if isinstance(v, int | float) else None


class SGDProbe:
    """An optimizer over `net`, read back by parameter name."""

    def __init__(self, net: nn.Module):
        self.net = net

    def values(self) -> dict:
        return {n: p.detach().clone() for n, p in self.net.named_parameters()}

    def describe(self, opt) -> dict:
        """{"groups": [{"names": [parameter name, or None for a tensor that is not one of
        net's], "lr", "weight_decay", "momentum", "dampening", "nesterov", "maximize"}],
        "params": net's parameter values}."""
        names = {id(p): n for n, p in self.net.named_parameters()}
        groups = []
        for g in list(opt.param_groups):
            params = g.get("params", [])
            params = [params] if isinstance(params, torch.Tensor) else list(params)
            groups.append({"names": [names.get(id(p)) for p in params],
                           **{key: _number(g.get(key, default)) for key, default in (
                               ("lr", None), ("weight_decay", 0.0), ("momentum", 0.0),
                               ("dampening", 0.0), ("nesterov", False), ("maximize", False))}})
        return {"type": wire.type_path(type(opt)), "groups": groups, "params": self.values()}

    def step(self, opt, grads: dict) -> dict:
        """Set every parameter's .grad to grads[name], call opt.step(); the parameters after."""
        for n, p in self.net.named_parameters():
            p.grad = grads[n].detach().clone().to(p.dtype)
        opt.step()
        return self.values()


@builder("weight_decay.sgd_probe")
def build_sgd_probe(net: nn.Module) -> SGDProbe:
    return SGDProbe(net)


class GradProbe:
    """probe(w): fn on a copy of w that requires grad; its result back-propagated."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, w: torch.Tensor) -> dict:
        w = w.detach().clone().requires_grad_(True)
        out = self.fn(w)
        tensor = isinstance(out, torch.Tensor)
        report = {"type": wire.type_path(type(out)), "tensor": tensor,
                  "shape": list(out.shape) if tensor else None,
                  "differentiable": bool(tensor and out.requires_grad and out.grad_fn is not None),
                  "grad": None}
        if report["differentiable"] and out.numel() == 1:
            out.sum().backward()
            report["grad"] = None if w.grad is None else w.grad.detach().clone()
        return report


@builder("weight_decay.grad_probe")
def build_grad_probe(fn) -> GradProbe:
    return GradProbe(fn)
