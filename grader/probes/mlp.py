"""03_mlp: probes built in the student's kernel (public code: no reference, no expected value).

- ``mlp.layers(net)``: the layers of a module, as plain data, in one round trip;
- ``mlp.recorder(power)``: the function ``Z -> torch.sigmoid(Z) ** power`` handed to
  ``tanh_via_sigmoid``, counting its calls (``recorder.calls``).
"""

from __future__ import annotations

import torch
from torch import nn

from grader import wire
from grader.observe import builder


def describe_layers(net) -> dict:
    """{"layers": [...]} with, per layer in order, its type and (for nn.Linear) its sizes and
    whether it has a bias; {"error": text} when the module cannot be read."""
    try:
        if isinstance(net, nn.Sequential):
            modules = list(nn.Sequential.__iter__(net))
        elif isinstance(net, nn.Module):
            modules = list(nn.Module.children(net))
        else:
            return {"error": f"not an nn.Module but {wire.type_path(type(net))}"}
        layers = []
        for m in modules:
            entry = {"type": wire.type_path(type(m)), "class": type(m).__name__,
                     "linear": isinstance(m, nn.Linear)}
            if entry["linear"]:
                entry["in_features"] = int(m.in_features)
                entry["out_features"] = int(m.out_features)
                entry["bias"] = m.bias is not None
            layers.append(entry)
        return {"layers": layers}
    except Exception as exc:  # noqa: BLE001 - a broken module is reported, never raised
        return {"error": f"{type(exc).__name__} while reading its layers"}


@builder("mlp.layers")
def build_layers(net) -> dict:
    return describe_layers(net)


class Recorder:
    """Z -> torch.sigmoid(Z) ** power, counting its calls. It is called inside the student's
    code, where torch's activations are tracked as forbidden: it computes with that tracking
    switched off, so its own use of torch.sigmoid is not counted as the student's."""

    def __init__(self, power: float = 1):
        self.power, self.calls = power, 0

    def __call__(self, Z):
        self.calls += 1
        with torch._C.DisableTorchFunction():
            s = torch.sigmoid(torch.as_tensor(Z))
            return s if self.power == 1 else s ** self.power


@builder("mlp.recorder")
def build_recorder(power: float = 1) -> Recorder:
    return Recorder(power)
