"""02_softmax: the objects `train_epoch(net, train_iter, loss, updater)` is given, built in the
student's kernel (public code: nets with given parameters, an updater that records its calls).

The judge reads back what it needs: `net.param_values()` (the parameters after the epoch, as
detached copies), `net.modes()` (the training flag at each forward, nn.Module nets only) and
`updater.calls` (the batch sizes the updater was called with).
"""

from __future__ import annotations

import torch
from torch import nn

from grader.observe import builder


class ModeProbe(nn.Module):
    """Passes its input through and records whether the net was in training mode."""

    def __init__(self):
        super().__init__()
        self.seen: list[bool] = []

    def forward(self, X):
        self.seen.append(bool(self.training))
        return X


class ProbedNet(nn.Sequential):
    """Softmax regression as an nn.Module: Flatten, a mode probe, Linear(d, q)."""

    def modes(self) -> list[bool]:
        return list(self[1].seen)

    def param_values(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.parameters()]


class ScratchNet:
    """A from-scratch softmax regression: a plain callable, not an nn.Module."""

    def __init__(self, W: torch.Tensor, b: torch.Tensor):
        self.d = W.shape[0]
        self.W = W.detach().clone().requires_grad_()
        self.b = b.detach().clone().requires_grad_()

    def __call__(self, X):
        return X.reshape(-1, self.d) @ self.W + self.b

    def params(self) -> list[torch.Tensor]:
        return [self.W, self.b]

    def param_values(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.params()]


class Updater:
    """A custom updater like d2l's: `updater(batch_size)` takes one minibatch SGD step of size
    lr / batch_size on the given parameters (by torch.optim.SGD), zeroes their gradients and
    records the batch size."""

    def __init__(self, params, lr: float):
        self.lr, self.calls = lr, []
        self.optimizer = torch.optim.SGD(list(params), lr=lr)

    def __call__(self, batch_size):
        self.calls.append(int(batch_size))
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr / batch_size
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=False)


@builder("softmax.module_net")
def build_module_net(weight: torch.Tensor, bias: torch.Tensor) -> ProbedNet:
    """Flatten -> probe -> Linear with the given weight (q, d) and bias (q,), in eval mode."""
    q, d = weight.shape
    net = ProbedNet(nn.Flatten(), ModeProbe(), nn.Linear(d, q)).to(weight.dtype)
    with torch.no_grad():
        net[2].weight.copy_(weight)
        net[2].bias.copy_(bias)
    net.eval()
    return net


@builder("softmax.scratch_net")
def build_scratch_net(W: torch.Tensor, b: torch.Tensor) -> ScratchNet:
    """A plain-function net X -> X.reshape(-1, d) @ W + b with W (d, q), b (q,)."""
    return ScratchNet(W, b)


@builder("softmax.updater")
def build_updater(net, lr: float) -> Updater:
    """Minibatch SGD on the parameters of `net` (a module, or a ScratchNet)."""
    params = net.parameters() if isinstance(net, nn.Module) else net.params()
    return Updater(params, lr)
