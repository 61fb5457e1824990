"""05_dropout: objects the checks make inside the student's kernel (public; no references).

- ``dropout.with_generator``: the student's function bound to ONE generator kept in the kernel,
  so that two calls share its state (a generator sent over the wire is a copy each time);
- ``dropout.recorder``: the input and output of named submodules at their last forward pass.
"""

from __future__ import annotations

import torch

from grader.observe import builder


class WithGenerator:
    """`fn(*args, generator)` with the same generator object at every call."""

    def __init__(self, fn, generator: torch.Generator):
        self.fn = fn
        self.generator = generator

    def __call__(self, *args):
        return self.fn(*args, self.generator)


@builder("dropout.with_generator")
def with_generator(fn, generator):
    if not isinstance(generator, torch.Generator):
        raise TypeError("a torch.Generator is expected")
    return WithGenerator(fn, generator)


def _copy(x):
    return x.detach().clone() if isinstance(x, torch.Tensor) else None


class Recorder:
    """What each watched module received (first input) and returned, at its last forward."""

    def __init__(self, modules: dict):
        self.seen: dict = {}
        self.hooks = [m.register_forward_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name):
        def hook(module, inputs, output):
            self.seen[name] = (_copy(inputs[0]) if inputs else None, _copy(output))
        return hook

    def last(self) -> dict:
        """{name: (input, output)} of the modules that ran since the last `clear`."""
        return dict(self.seen)

    def clear(self) -> None:
        self.seen.clear()

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()
        self.hooks = []


@builder("dropout.recorder")
def recorder(modules: dict):
    if not all(isinstance(m, torch.nn.Module) for m in modules.values()):
        raise TypeError("modules are expected")
    return Recorder(modules)
