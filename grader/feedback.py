"""Layered comparison of a student's answer with the expected one.

Feedback goes type -> dtype -> shape -> values. A value mismatch shows the input, the expected
and the received values, where they differ most, and the likely cause: the first of the
`likely` causes whose buggy output matches what was received, else a generic diagnosis
(transpose, constant factor, sign, NaN).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch


class Mismatch(Exception):
    """A check failed. The message is the feedback a student reads."""


class NotImplementedAnswer(Exception):
    """The student's code still raises NotImplementedError."""


def type_name(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"torch.Tensor ({x.dtype}, shape {tuple(x.shape)})"
    return type(x).__module__.replace("builtins", "").strip(".") + (
        "." if type(x).__module__ != "builtins" else "") + type(x).__qualname__


def fmt_number(v: float) -> str:
    if math.isnan(v) or math.isinf(v):
        return str(v)
    if v == int(v) and abs(v) < 1e6:
        return f"{int(v)}."
    return f"{v:.5g}"


def fmt_value(x, max_rows: int = 4, max_cols: int = 6) -> str:
    """A short, readable rendering of a tensor or Python value (never its source)."""
    if not isinstance(x, torch.Tensor):
        text = repr(x)
        return text if len(text) <= 200 else text[:200] + " ..."
    t = x.detach().to("cpu")
    head = f"{str(t.dtype).replace('torch.', '')} {tuple(t.shape)}"
    if t.dim() == 0:
        return f"{head} {fmt_number(t.item())}"
    if t.is_complex() or t.dtype == torch.bool:
        t = t.to(torch.float64)
    t = t.to(torch.float64)
    if t.dim() == 1:
        t = t[None]
        one_d = True
    else:
        t = t.reshape(-1, t.shape[-1])
        one_d = False

    def row(r):
        items = [fmt_number(v) for v in r[:max_cols].tolist()]
        if r.numel() > max_cols:
            items.append("...")
        return "[" + ", ".join(items) + "]"

    rows = [row(r) for r in t[:max_rows]]
    if t.shape[0] > max_rows:
        rows.append("...")
    body = rows[0] if one_d else "[" + ", ".join(rows) + "]"
    return f"{head} {body}"


def describe_inputs(inputs: Mapping[str, object] | None) -> str:
    if not inputs:
        return ""
    return "".join(f"\n  input {k}: {fmt_value(v)}" for k, v in inputs.items())


def _close(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float) -> bool:
    if a.shape != b.shape:
        return False
    a64, b64 = a.detach().cpu().to(torch.float64), b.detach().cpu().to(torch.float64)
    return bool(torch.allclose(a64, b64, atol=atol, rtol=rtol, equal_nan=True))


def generic_cause(received: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float):
    """Diagnose a value mismatch without knowing the exercise."""
    r = received.detach().cpu().to(torch.float64)
    e = expected.detach().cpu().to(torch.float64)
    if torch.isnan(r).any() and not torch.isnan(e).any():
        return "NaN in the result: an overflow (exp of a large number) or 0/0 or log(0)"
    if torch.isinf(r).any() and not torch.isinf(e).any():
        return "inf in the result: an overflow (exp of a large number?) or a division by zero"
    if r.dim() == 2 and r.shape[0] == r.shape[1] and _close(r, e.T, atol, rtol):
        return "the result is the transpose of the expected one (this only shows on square shapes)"
    if _close(r, -e, atol, rtol) and e.abs().max() > atol:
        return "the sign is flipped"
    mask = e.abs() > max(atol, 1e-12)
    if int(mask.sum()) >= 2 and torch.isfinite(r).all():  # one number has no telling ratio
        ratio = r[mask] / e[mask]
        c = ratio.median().item()
        if abs(c - 1) > 1e-3 and c != 0 and _close(r, c * e, atol, rtol):
            return f"the result is {c:.4g} times the expected one: a missing or extra scale factor"
        diff = r - e
        d0 = diff.flatten()[0].item()
        if abs(d0) > atol and _close(diff, torch.full_like(diff, d0), atol, rtol):
            return f"the result is off by a constant {d0:.4g}: a missing or extra term"
    return None


def expect_tensor(
    received,
    expected: torch.Tensor,
    *,
    what: str,
    inputs: Mapping[str, object] | None = None,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    check_dtype: bool = True,
    likely: Mapping[str, Callable[[], object]] | None = None,
) -> None:
    """Raise Mismatch with layered feedback unless `received` matches `expected`.

    `likely` maps a cause (what a student most likely did) to a function computing that buggy
    output on the same inputs; the first one that matches `received` is named in the feedback.
    """
    shown = describe_inputs(inputs)
    if not isinstance(received, torch.Tensor):
        cause = ""
        if received is None:
            cause = "\n  likely cause: the function has no `return` statement"
        elif type(received).__module__ == "numpy":
            cause = "\n  likely cause: a NumPy result; use torch operations throughout"
        elif isinstance(received, tuple | list):
            cause = "\n  likely cause: returning several values where one tensor is expected"
        raise Mismatch(
            f"{what} should return a torch.Tensor, but returned {type_name(received)}.{shown}"
            f"{cause}")
    if check_dtype and received.dtype != expected.dtype:
        raise Mismatch(
            f"{what} returned dtype {received.dtype}, expected {expected.dtype} "
            f"(keep the input's dtype).{shown}\n"
            "  likely cause: a tensor created without dtype= (torch.zeros/ones/tensor default to "
            "float32), or a conversion such as .float() or .double()")
    if received.shape != expected.shape:
        hint = ""
        if received.numel() == expected.numel():
            hint = ("\n  likely cause: right values in the wrong layout; reshape, or reduce "
                    "with keepdim, or check which axis you used")
        elif received.dim() == expected.dim() + 1 or received.numel() == expected.numel() ** 2:
            hint = ("\n  likely cause: broadcasting of shapes (n,) and (n, 1) into (n, n); "
                    "reshape one operand to the other's shape first")
        elif expected.dim() == 0:
            hint = "\n  likely cause: a missing reduction (a scalar is expected)"
        elif received.dim() == 0:
            hint = ("\n  likely cause: a reduction (sum or mean) where one value per element "
                    "or per example is expected")
        raise Mismatch(
            f"{what} returned shape {tuple(received.shape)}, expected {tuple(expected.shape)}."
            f"{shown}{hint}")
    if received.device != expected.device:
        raise Mismatch(f"{what} returned a tensor on {received.device}, expected "
                       f"{expected.device} (keep the input's device).")
    if _close(received, expected, atol, rtol):
        return
    r = received.detach().cpu().to(torch.float64)
    e = expected.detach().cpu().to(torch.float64)
    err = (r - e).abs()
    err = torch.where(torch.isnan(err), torch.full_like(err, math.inf), err)
    err = torch.where(torch.isnan(r) & torch.isnan(e), torch.zeros_like(err), err)
    idx = int(torch.argmax(err.flatten())) if err.numel() else 0
    where = ""
    if err.numel() > 1:
        pos = tuple(int(i) for i in torch.unravel_index(torch.tensor(idx), err.shape))
        where = (f"\n  largest error at index {pos}: expected {fmt_number(e.flatten()[idx].item())},"
                 f" received {fmt_number(r.flatten()[idx].item())}")
    cause = None
    for name, fn in (likely or {}).items():
        try:
            alt = fn() if callable(fn) else fn  # a function of no arguments, or its value
        except Exception:  # a buggy variant that does not even run on this input
            continue
        if isinstance(alt, torch.Tensor) and _close(received, alt, atol, rtol):
            cause = name
            break
    cause = cause or generic_cause(received, expected, atol, rtol)
    raise Mismatch(
        f"{what} returned wrong values.{shown}\n  expected: {fmt_value(expected)}"
        f"\n  received: {fmt_value(received)}{where}"
        + (f"\n  likely cause: {cause}" if cause else ""))


def expect_close(received, expected: float, *, what: str, atol: float, rtol: float = 0.0,
                 inputs=None, cause: str | None = None) -> None:
    """Compare a Python number (or 0-d tensor) with an expected float."""
    if isinstance(received, torch.Tensor) and received.numel() == 1:
        received = received.item()
    if not isinstance(received, int | float) or isinstance(received, bool):
        raise Mismatch(f"{what} should be a number, but is {type_name(received)}."
                       f"{describe_inputs(inputs)}")
    if not (abs(received - expected) <= atol + rtol * abs(expected)):
        raise Mismatch(f"{what} is {fmt_number(float(received))}, expected {fmt_number(expected)}."
                       f"{describe_inputs(inputs)}" + (f"\n  likely cause: {cause}" if cause else ""))


def expect_pair(result, what: str, first: str, second: str):
    """`result` unpacked as a pair; a Mismatch naming the two expected parts otherwise."""
    if not isinstance(result, tuple | list) or len(result) != 2:
        raise Mismatch(f"{what} should return a pair ({first}, {second}), but returned "
                       f"{fmt_value(result)}" + (f" (a {type(result).__name__} of length "
                                                 f"{len(result)})"
                                                 if isinstance(result, tuple | list) else ""))
    return result
