"""06_initialization: objects the checks make inside the student's kernel (public; no
references).

- ``initialization.returning``: the student's initialiser wrapped so that the check learns
  whether it returned W itself (identity does not survive the wire);
- ``initialization.init_net``: the net that `init_weights` is applied to (Linear, ReLU,
  BatchNorm1d, Tanh, Conv2d layers), with non-default values so that "untouched" shows;
- ``initialization.mlp``: an MLP with given parameters (optionally nested in a block);
- ``initialization.fill_grads``: garbage in every `.grad`, as an earlier backward pass leaves.
"""

from __future__ import annotations

import torch
from torch import nn

from grader.observe import builder


class ReturnsArgument:
    """`fn(W, ...)`, answering (whether it returned W itself, what it returned otherwise)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, W, *args, **kwargs):
        out = self.fn(W, *args, **kwargs)
        return (out is W, None if out is W else out)


@builder("initialization.returning")
def returning(fn):
    return ReturnsArgument(fn)


@builder("initialization.init_net")
def init_net(bias: bool, generator: torch.Generator):
    net = nn.Sequential(nn.Linear(200, 300, bias=bias), nn.ReLU(), nn.BatchNorm1d(300),
                        nn.Linear(300, 100, bias=bias), nn.Tanh(), nn.Conv2d(3, 8, 3),
                        nn.Linear(100, 10, bias=bias))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
        net[2].weight.normal_(1.0, 0.1, generator=generator)
        for lin in (net[0], net[3], net[6]):
            if lin.bias is not None:
                lin.bias.fill_(0.25)
    return net


_ACTIVATIONS = {"ReLU": nn.ReLU, "Sigmoid": nn.Sigmoid, "Tanh": nn.Tanh}


@builder("initialization.mlp")
def mlp(sizes: list, activation: str, params: list, dtype: torch.dtype, nested: bool = False):
    """Linear layers of `sizes` with `activation` between them, parameters [(W, b), ...];
    nested: the first Linear and its activation inside a block of their own."""
    act = _ACTIVATIONS[activation]
    layers: list = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act())
    if nested:
        layers = [nn.Sequential(*layers[:2]), *layers[2:]]
    net = nn.Sequential(*layers).to(dtype)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if len(linears) != len(params):
        raise ValueError("one (W, b) per Linear layer is expected")
    with torch.no_grad():
        for lin, (W, b) in zip(linears, params):
            lin.weight.copy_(W)
            lin.bias.copy_(b)
    return net


@builder("initialization.fill_grads")
def fill_grads(net: nn.Module, start: float) -> None:
    """`.grad` of the i-th parameter filled with start + i."""
    for i, p in enumerate(net.parameters()):
        p.grad = torch.full_like(p, start + i)
