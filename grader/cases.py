"""Inputs and statistics that checks share.

Every input is drawn from its own seeded generator, so a check is reproducible and independent
of the student's global random state.

Statistical checks compare an estimate with its expected value in units of its standard error.
Z = 5 makes the chance that a correct answer fails one such comparison 5.7e-7 (two-sided normal
tail); a check with k comparisons fails a correct answer with probability below k * 5.7e-7.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import math

import torch

from grader.feedback import Mismatch, fmt_number

Z = 5.0
FALSE_ALARM = math.erfc(Z / math.sqrt(2))  # 5.7e-7

DTYPES = (torch.float32, torch.float64)


# The seed of a grading run: set while hidden checks run, drawn per run by the grader and never
# shown to the notebook, so hidden inputs cannot be known in advance.
_SALT: contextvars.ContextVar[int | None] = contextvars.ContextVar("salt", default=None)


@contextlib.contextmanager
def hidden_salt(salt: int | None):
    token = _SALT.set(salt)
    try:
        yield
    finally:
        _SALT.reset(token)


def seed_of(seed: int) -> int:
    """`seed` as is in visible checks; mixed with the grading run's seed in hidden ones."""
    salt = _SALT.get()
    if salt is None:
        return seed
    h = hashlib.sha256(f"{salt}:{seed}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed_of(seed))


def randn(*shape, seed: int, dtype=torch.float64, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape, generator=gen(seed), dtype=torch.float64) * scale).to(dtype)


def tol(dtype, magnitude: float = 1.0) -> dict:
    """Tolerances for results computed in `dtype` from inputs of size about `magnitude`."""
    if dtype == torch.float64:
        return {"atol": 1e-9 * max(1.0, magnitude), "rtol": 1e-7}
    eps = torch.finfo(dtype).eps
    return {"atol": 8 * eps * max(1.0, magnitude), "rtol": 1e-4}


def expect_stat(value: float, expected: float, se: float, what: str, cause: str = "") -> None:
    """Fail when `value` is more than Z standard errors from `expected`."""
    if not math.isfinite(value) or abs(value - expected) > Z * se:
        raise Mismatch(
            f"{what} is {fmt_number(value)}, expected {fmt_number(expected)} "
            f"(allowed: within {Z:g} standard errors, ±{fmt_number(Z * se)}; a correct answer "
            f"fails this with probability {FALSE_ALARM:.1e})." + (f"\n  likely cause: {cause}"
                                                                   if cause else ""))
