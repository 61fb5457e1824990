"""10_optimization: parameters built in the student's kernel, and a driver for optimisers.

Public: this runs where the student's code runs. It holds no reference and no expected value;
the judge compares what it reports.

- ``optimization.params(tensors)``: leaf tensors that require grad (copies of `tensors`);
  ``construct_optimiser(cls, iterator, kwargs)`` calls ``cls`` on them, as a list or as a
  one-shot generator (what ``model.parameters()`` is); ``step_optimiser(opt, grads)`` sets each
  parameter's ``.grad`` to the given tensor (or None) and calls ``opt.step()``, once per entry of
  `grads`, and reports the values after each step and whether autograd recorded anything;
  ``grads()`` reads every ``.grad``.
- ``optimization.quadratic_grad(H, c)``: the function ``x -> H @ (x - c)`` (``grad_f`` of `gd`).
- ``optimization.derivative(kind, params)``: the derivative of a convex function of one variable
  (``df`` of `bisection_minimize`), counting its calls.
"""

from __future__ import annotations

import math

import torch

from grader.observe import builder


class Params:
    """Parameters an optimiser is constructed with, stepped with given gradients."""

    def __init__(self, tensors):
        self.tensors = [torch.as_tensor(x).detach().clone().requires_grad_(True) for x in tensors]

    def params(self) -> list:
        return list(self.tensors)

    def params_iter(self):
        return (p for p in self.tensors)

    def construct_optimiser(self, cls, iterator: bool, kwargs: dict):
        """cls(parameters, **kwargs): the parameters as a list, or as a generator."""
        return cls(self.params_iter() if iterator else self.params(), **kwargs)

    def step_optimiser(self, opt, grads: list) -> dict:
        """grads: one list per step, one tensor or None per parameter."""
        values, recorded = [], False
        ids = [id(p) for p in self.tensors]
        for step in grads:
            for p, g in zip(self.tensors, step):
                p.grad = None if g is None else torch.as_tensor(g).detach().clone().to(p.dtype)
            opt.step()
            recorded = recorded or any(p.grad_fn is not None or not p.is_leaf
                                       for p in self.tensors)
            values.append([p.detach().clone() for p in self.tensors])
        return {"values": values, "recorded": recorded,
                "same": [id(p) for p in self.tensors] == ids,
                "dtypes": [str(p.dtype) for p in self.tensors]}

    def grads(self) -> list:
        return [None if p.grad is None else p.grad.detach().clone() for p in self.tensors]


@builder("optimization.params")
def build_params(tensors) -> Params:
    return Params(tensors)


class QuadraticGrad:
    """x -> H @ (x - c): the gradient of f(x) = (x - c)^T H (x - c) / 2."""

    def __init__(self, H, c):
        self.H, self.c = torch.as_tensor(H), torch.as_tensor(c)

    def __call__(self, x):
        return self.H.to(x.dtype) @ (x - self.c.to(x.dtype))


@builder("optimization.quadratic_grad")
def build_quadratic_grad(H, c) -> QuadraticGrad:
    return QuadraticGrad(H, c)


class Derivative:
    """The derivative of a convex function of one variable, counting its calls (`calls`).

    kinds: "logexp" (D2L 12.3: f(x) = log(exp(x) + exp(-2x - 3))), "quadratic" with params
    (s, m): f(x) = s (x - m)^2, "smoothabs" with params (k, m): f(x) = log(2 cosh(k (x - m))) / k,
    a smoothed |x - m| whose derivative is tanh(k (x - m)).
    """

    def __init__(self, kind: str, params):
        self.kind, self.params, self.calls = kind, [float(p) for p in params], 0

    def __call__(self, x) -> float:
        self.calls += 1
        x = float(x)
        if self.kind == "logexp":
            u, v = x, -2 * x - 3
            m = max(u, v)
            eu, ev = math.exp(u - m), math.exp(v - m)
            return (eu - 2 * ev) / (eu + ev)
        if self.kind == "quadratic":
            s, m = self.params
            return 2 * s * (x - m)
        if self.kind == "smoothabs":
            k, m = self.params
            return math.tanh(k * (x - m))
        raise ValueError(f"unknown function {self.kind!r}")


@builder("optimization.derivative")
def build_derivative(kind: str, params) -> Derivative:
    return Derivative(kind, params)
