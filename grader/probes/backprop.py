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
