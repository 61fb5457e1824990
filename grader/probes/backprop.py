"""07_backprop: the functions `numerical_gradient(f, x, h)` is given, built in the student's
kernel (public code: they are inputs of the check, described in its cases).

- ``sin``: f(z) = sum(c * sin(2 z)) + 0.1 * sum(z**2)**2, with c a tensor of x's shape;
- ``quadratic``: f(z) = z @ M @ z, with M a square matrix.

f checks that it is called with a tensor of x's shape, and returns a 0-d tensor (or a Python
float with `returns_float`).
"""

from __future__ import annotations

import torch

from grader.observe import builder

KINDS = ("sin", "quadratic")


class TestFunction:
    """A scalar function of a tensor of a fixed shape."""

    __test__ = False  # not a pytest class

    def __init__(self, kind: str, coef: torch.Tensor, shape, returns_float: bool = False):
        if kind not in KINDS:
            raise ValueError(f"unknown test function {kind!r}")
        self.kind = kind
        self.coef = coef.detach().clone()
        self.shape = tuple(shape)
        self.returns_float = bool(returns_float)

    def __repr__(self) -> str:
        return f"<test function f of a tensor of shape {self.shape}>"

    def __call__(self, z):
        if not isinstance(z, torch.Tensor) or tuple(z.shape) != self.shape:
            got = (f"a tensor of shape {tuple(z.shape)}" if isinstance(z, torch.Tensor)
                   else f"a {type(z).__name__}")
            raise ValueError(f"f was called with {got}; it should get a tensor of x's shape "
                             f"{self.shape}")
        if self.kind == "sin":
            v = (self.coef * torch.sin(2 * z)).sum() + 0.1 * ((z ** 2).sum()) ** 2
        else:
            v = z @ self.coef @ z
        return float(v) if self.returns_float else v


@builder("backprop.test_function")
def build_test_function(kind: str, coef: torch.Tensor, shape, returns_float: bool = False):
    return TestFunction(kind, coef, shape, returns_float)


# --- part 2 (the library): models built in the kernel ------------------------------------------


def describe_layers(model) -> dict:
    """{"layers": [...]} with, per entry of model.layers in order, its class name, its id and
    the shapes of its W and b (None when it has none); {"error": text} when unreadable."""
    try:
        layers = model.layers
        if not isinstance(layers, list | tuple):
            return {"error": f"model.layers is a {type(layers).__name__}, not a list"}
        out = []
        for layer in layers:
            W, b = getattr(layer, "W", None), getattr(layer, "b", None)
            out.append({"class": type(layer).__name__, "id": id(layer),
                        "W": tuple(W.shape) if isinstance(W, torch.Tensor) else None,
                        "b": tuple(b.shape) if isinstance(b, torch.Tensor) else None})
        return {"layers": out}
    except Exception as exc:  # noqa: BLE001 - a broken model is reported, never raised
        return {"error": f"{type(exc).__name__} while reading model.layers"}


@builder("backprop.describe_layers")
def build_describe_layers(model) -> dict:
    return describe_layers(model)


class LayerAccess:
    """Sets and reads the parameters and gradients of the layers of `model.layers` that have a
    W (the Linear layers), in order, in one round trip each."""

    def __init__(self, model):
        self.model = model

    def linears(self):
        return [layer for layer in self.model.layers if hasattr(layer, "W")]

    def set_params(self, params) -> None:
        for layer, (W, b) in zip(self.linears(), params):
            layer.W, layer.b = W.clone(), b.clone()

    def grads(self) -> list:
        return [(getattr(layer, "dLdW", None), getattr(layer, "dLdb", None))
                for layer in self.linears()]


@builder("backprop.layer_access")
def build_layer_access(model) -> LayerAccess:
    return LayerAccess(model)


class ParamLayer:
    """A layer of a model handed to SGD: the attributes of the given dict (W, b, dLdW, ...)."""

    def __init__(self, kind: str, tensors: dict):
        self.kind = kind
        for k, v in tensors.items():
            setattr(self, k, v.detach().clone())

    def __repr__(self) -> str:
        return f"<{self.kind} layer>"


def _named(kind):
    return type(kind, (ParamLayer,), {})


class SGDModel:
    """A model with `layers` (Linear-like layers with W, b; BatchNorm1d-like ones with BW, Bb;
    parameterless ones) for the student's SGD; `run(opt, grads)` sets the gradients of each
    step, calls opt.step(), and reports the parameters after each step and whether they are
    still the same tensor objects."""

    GRADS = {"W": "dLdW", "b": "dLdb", "BW": "dLdBW", "Bb": "dLdBb"}

    def __init__(self, spec: list):
        self.layers = [_named(kind)(kind, tensors) for kind, tensors in spec]

    def params(self) -> list:
        return [(i, name, getattr(layer, name)) for i, layer in enumerate(self.layers)
                for name in self.GRADS if hasattr(layer, name)]

    def make(self, cls, args: tuple, kwargs: dict):
        return cls(self, *args, **kwargs)

    def run(self, opt, grads: list) -> dict:
        """grads: one list per step, with a dict {parameter name: gradient} per layer."""
        ids = [id(p) for _, _, p in self.params()]
        values = []
        for step in grads:
            for layer, g in zip(self.layers, step):
                for name, value in g.items():
                    setattr(layer, self.GRADS[name], value.detach().clone())
            opt.step()
            values.append([p.detach().clone() for _, _, p in self.params()])
        return {"values": values, "same": [id(p) for _, _, p in self.params()] == ids}


@builder("backprop.sgd_model")
def build_sgd_model(spec: list) -> SGDModel:
    return SGDModel(spec)


class EpochRecorder:
    """The `on_epoch` callback given to `fit_classifier`: notes (epoch, loss) at every call."""

    def __init__(self):
        self.calls: list = []

    def __repr__(self) -> str:
        return "<on_epoch callback>"

    def __call__(self, epoch, net, loss):
        try:
            loss = float(loss)
        except (TypeError, ValueError, RuntimeError):
            loss = None
        self.calls.append((epoch if isinstance(epoch, int) else repr(epoch), loss,
                           net is not None))

    def records(self) -> list:
        return list(self.calls)


@builder("backprop.epoch_recorder")
def build_epoch_recorder() -> EpochRecorder:
    return EpochRecorder()
