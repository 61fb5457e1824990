"""Plain data on the wire between a student's kernel and the grader: no pickle, exact types.

What crosses is JSON (structure, numbers, strings) plus raw bytes for arrays. Decoding builds
only exact built-in types, `torch.Tensor`, `numpy.ndarray`, `torch.Generator`, `torch.dtype`
and pandas frames, so a tensor subclass with `__torch_function__`, an object whose `__eq__`
is always true or a float subclass never reaches the grader: on the kernel's side anything
that is not plain data is kept there and sent as an opaque reference (`Ref`) with its type
name, which a check reports as the wrong type.

    blob = dumps(value, refs=...)   # bytes
    value = loads(blob)             # raises WireError on anything malformed or too large

Format: b"DLGW1" + 8-byte length of the JSON header + header + concatenated buffers.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import struct

import numpy as np
import torch

MAGIC = b"DLGW1"
MAX_BYTES = 1 << 30
MAX_DEPTH = 64
MAX_ITEMS = 1_000_000

DTYPES = {str(d).replace("torch.", ""): d for d in (
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64,
    torch.complex128, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
    torch.bool)}
NP_DTYPES = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
             "bool", "complex64", "complex128"}
NP_SCALARS = {np.float64: "float64", np.float32: "float32", np.float16: "float16",
              np.int64: "int64", np.int32: "int32", np.int16: "int16", np.int8: "int8",
              np.uint8: "uint8", np.bool_: "bool"}


class WireError(ValueError):
    """Malformed, oversized or disallowed data."""


@dataclasses.dataclass(frozen=True)
class Ref:
    """An object that stays where it was made (the student's kernel), known by number and type."""

    id: int
    type: str  # "module.QualName"
    mro: tuple[str, ...] = ()
    callable: bool = False
    info: dict = dataclasses.field(default_factory=dict, compare=False)

    @property
    def type_name(self) -> str:
        return self.type


def type_path(t: type) -> str:
    module = getattr(t, "__module__", "") or ""
    name = getattr(t, "__qualname__", getattr(t, "__name__", "?"))
    return name if module == "builtins" else f"{module}.{name}"


class _Encoder:
    def __init__(self, opaque):
        self.buffers: list[bytes] = []
        self.opaque = opaque  # object -> JSON for things that are not plain data (or raise)
        self.count = 0

    def buf(self, data: bytes) -> int:
        self.buffers.append(data)
        return len(self.buffers) - 1

    def tensor(self, x: torch.Tensor) -> dict:
        t = torch.Tensor.detach(x).cpu()
        dtype = str(t.dtype).replace("torch.", "")
        if dtype not in DTYPES:
            raise WireError(f"tensors of dtype {dtype} are not supported")
        if t.is_conj():
            t = t.resolve_conj()
        if t.is_neg():
            t = t.resolve_neg()
        if t.dtype in (torch.bfloat16, torch.float16):  # numpy has no bfloat16: same-size ints
            t = t.view(torch.int16)
        raw = t.numpy().tobytes() if t.numel() else b""  # C order, whatever the strides
        out = {"$T": self.buf(raw), "dtype": dtype, "shape": list(t.shape)}
        if x.requires_grad:
            out["rg"] = True
        if not x.is_leaf:
            out["leaf"] = False
        if type(x) is torch.nn.Parameter:
            out["param"] = True
        grad = x.grad if x.is_leaf else None
        if grad is not None and type(grad) is torch.Tensor:
            out["grad"] = self.tensor(grad)
        return out

    def enc(self, x, depth=0):
        self.count += 1
        if depth > MAX_DEPTH or self.count > MAX_ITEMS:
            raise WireError("data nested too deeply or too many items")
        t = type(x)
        if x is None or t is bool or t is str:
            return x
        if t is int:
            return x if abs(x) < 2 ** 53 else {"$i": str(x)}
        if t is float:
            return x if math.isfinite(x) else {"$f": repr(x)}
        if t is list:
            return [self.enc(v, depth + 1) for v in x]
        if t is tuple or t is torch.Size:
            return {"$t": [self.enc(v, depth + 1) for v in x]}
        if t is dict or t is collections.OrderedDict:  # e.g. a module's state_dict()
            return {"$d": [[self.enc(k, depth + 1), self.enc(v, depth + 1)] for k, v in x.items()]}
        if t is torch.Tensor or t is torch.nn.Parameter:
            return self.tensor(x)
        if t is torch.dtype:
            return {"$dtype": str(x).replace("torch.", "")}
        if t is torch.device:
            return {"$dev": str(x)}
        if t is torch.Generator:
            return {"$gen": self.tensor(x.get_state()), "device": str(x.device)}
        if t is np.ndarray and x.dtype.name in NP_DTYPES:
            a = np.ascontiguousarray(x)
            return {"$np": self.buf(a.tobytes()), "dtype": a.dtype.name, "shape": list(a.shape)}
        if t in NP_SCALARS:
            return {"$nps": NP_SCALARS[t], "v": self.enc(x.item(), depth + 1)}
        if t is slice:
            return {"$slice": [self.enc(x.start), self.enc(x.stop), self.enc(x.step)]}
        frame = _pandas_frame(x)
        if frame is not None:
            return self.frame(x, frame, depth)
        if self.opaque is None:
            raise WireError(f"cannot send an object of type {type_path(t)}")
        return self.opaque(x)

    def frame(self, x, kind, depth):
        import pandas as pd

        if kind == "series":
            return {"$series": self.enc(x.to_frame(name=x.name if x.name is not None else 0),
                                        depth + 1)}
        cols = []
        for name in x.columns:
            col = x[name]
            dtype = str(col.dtype)
            if isinstance(col.dtype, np.dtype) and col.dtype.kind in "biuf":
                cols.append([self.enc(name), dtype, self.enc(col.to_numpy(), depth + 1)])
            else:  # strings (pandas 3's `str`), objects, categoricals, nullable numbers:
                # a list of str / int / float (NaN kept as NaN) / bool / None (None, pd.NA)
                values = [None if (v is None or v is pd.NA)
                          else (v if type(v) in (str, int, float, bool) else str(v))
                          for v in col.tolist()]
                cols.append([self.enc(name), dtype, self.enc(values, depth + 1)])
        out = {"$df": cols, "index": self.enc(list(x.index.tolist()), depth + 1)}
        if type(x.index) is pd.RangeIndex:  # kept as a RangeIndex (not a list of ints)
            out["range"] = [int(x.index.start), int(x.index.stop), int(x.index.step)]
        return out


def _pandas_frame(x):
    module = type(x).__module__
    if not module.startswith("pandas"):
        return None
    import pandas as pd

    if type(x) is pd.DataFrame:
        return "frame"
    if type(x) is pd.Series:
        return "series"
    return None


def dumps(value, opaque=None) -> bytes:
    """Encode `value`; `opaque(obj) -> dict` handles objects that are not plain data."""
    e = _Encoder(opaque)
    header = json.dumps({"v": e.enc(value), "n": [len(b) for b in e.buffers]},
                        separators=(",", ":"), allow_nan=False).encode()
    return MAGIC + struct.pack("<Q", len(header)) + header + b"".join(e.buffers)


def digest(value) -> str:
    """A stable fingerprint of plain data (inputs of a recorded reference call)."""
    return hashlib.sha256(dumps(value)).hexdigest()[:32]


class _Decoder:
    def __init__(self, buffers, refs):
        self.buffers = buffers
        self.refs = refs  # Ref -> object (judge side: a Handle; kernel side: the live object)
        self.count = 0

    def buf(self, i) -> bytes:
        if type(i) is not int or not 0 <= i < len(self.buffers):
            raise WireError("bad buffer index")
        return self.buffers[i]

    def tensor(self, d: dict) -> torch.Tensor:
        dtype = DTYPES.get(d.get("dtype"))
        shape = d.get("shape")
        if dtype is None or type(shape) is not list or not all(type(s) is int and s >= 0
                                                                 for s in shape):
            raise WireError("bad tensor header")
        raw = self.buf(d["$T"])
        n = math.prod(shape)
        itemsize = torch.empty((), dtype=dtype).element_size()
        if len(raw) != n * itemsize:
            raise WireError("tensor size does not match its shape")
        if n == 0:
            t = torch.empty(shape, dtype=dtype)
        else:
            t = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(shape)
        if d.get("param"):
            t = torch.nn.Parameter(t, requires_grad=bool(d.get("rg")))
        elif d.get("rg") and (t.is_floating_point() or t.is_complex()):
            t.requires_grad_(True)
        if d.get("grad") is not None:
            g = self.tensor(d["grad"])
            if t.requires_grad and g.shape == t.shape and g.dtype == t.dtype:
                t.grad = g
        if d.get("leaf") is False and t.requires_grad:
            t = t * 1  # a tensor that came out of a recorded computation (not a leaf)
        return t

    def dec(self, x, depth=0):
        self.count += 1
        if depth > MAX_DEPTH or self.count > MAX_ITEMS:
            raise WireError("data nested too deeply or too many items")
        t = type(x)
        if x is None or t in (bool, str, int, float):
            return x
        if t is list:
            return [self.dec(v, depth + 1) for v in x]
        if t is not dict or len(x) == 0:
            raise WireError("unexpected value")
        key = next(iter(x))
        if key == "$t":
            return tuple(self.dec(v, depth + 1) for v in _list(x["$t"]))
        if key == "$d":
            out = {}
            for pair in _list(x["$d"]):
                k, v = _list(pair)
                k = self.dec(k, depth + 1)
                if type(k) not in (str, int, float, bool, tuple) and k is not None:
                    raise WireError("bad dict key")
                out[k] = self.dec(v, depth + 1)
            return out
        if key == "$i":
            return int(_str(x["$i"]))
        if key == "$f":
            v = float(_str(x["$f"]))
            return v
        if key == "$T":
            return self.tensor(x)
        if key == "$dtype":
            d = DTYPES.get(x["$dtype"])
            if d is None:
                raise WireError("bad dtype")
            return d
        if key == "$dev":
            return torch.device(_str(x["$dev"]))
        if key == "$gen":
            g = torch.Generator()
            try:
                g.set_state(self.tensor(x["$gen"]))
            except (RuntimeError, TypeError) as exc:
                raise WireError("bad generator state") from exc
            return g
        if key == "$np":
            dtype = x.get("dtype")
            shape = x.get("shape")
            if dtype not in NP_DTYPES or type(shape) is not list:
                raise WireError("bad array header")
            raw = self.buf(x["$np"])
            a = np.frombuffer(raw, dtype=np.dtype(dtype))
            if a.size != math.prod(shape):
                raise WireError("array size does not match its shape")
            return a.reshape(shape).copy()
        if key == "$nps":
            kind = x.get("dtype") or x.get("$nps")
            if kind not in NP_DTYPES:
                raise WireError("bad numpy scalar")
            return np.dtype(kind).type(self.dec(x["v"], depth + 1))
        if key == "$slice":
            return slice(*[self.dec(v, depth + 1) for v in _list(x["$slice"])])
        if key == "$df":
            return self.frame(x, depth)
        if key == "$series":
            df = self.dec(x["$series"], depth + 1)
            return df[df.columns[0]]
        if key in ("$obj", "$h"):
            ref = Ref(int(x[key]), _str(x.get("type", "object")),
                      tuple(_str(m) for m in _list(x.get("mro", []))),
                      bool(x.get("callable", False)),
                      x.get("info", {}) if type(x.get("info", {})) is dict else {})
            return self.refs(ref) if self.refs else ref
        raise WireError(f"unknown tag {key!r}")

    def frame(self, x, depth):
        import pandas as pd

        data = {}
        for entry in _list(x["$df"]):
            name, dtype, values = _list(entry)
            name = self.dec(name, depth + 1)
            values = self.dec(values, depth + 1)
            try:
                data[name] = pd.Series(values, dtype=_str(dtype)) if type(values) is list else \
                    pd.Series(values)
            except (TypeError, ValueError):
                data[name] = pd.Series(values)
        index = self.dec(x.get("index", []), depth + 1)
        df = pd.DataFrame(data)
        r = x.get("range")
        if type(r) is list and len(r) == 3 and all(type(v) is int for v in r) and r[2] != 0 \
                and len(range(*r)) == len(df):
            df.index = pd.RangeIndex(*r)
        elif type(index) is list and len(index) == len(df):
            df.index = index
        return df


def _list(x) -> list:
    if type(x) is not list:
        raise WireError("expected a list")
    return x


def _str(x) -> str:
    if type(x) is not str:
        raise WireError("expected a string")
    return x


def loads(data: bytes, refs=None, max_bytes: int = MAX_BYTES):
    """Decode what `dumps` made; `refs(Ref) -> object` maps opaque references."""
    if type(data) not in (bytes, bytearray, memoryview):
        raise WireError("expected bytes")
    data = bytes(data)
    if len(data) > max_bytes:
        raise WireError(f"data larger than {max_bytes} bytes")
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 8:
        raise WireError("not grader data")
    (n,) = struct.unpack("<Q", data[len(MAGIC):len(MAGIC) + 8])
    start = len(MAGIC) + 8
    if n > len(data) - start:
        raise WireError("truncated header")
    try:
        header = json.loads(data[start:start + n])
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError("bad header") from exc
    if type(header) is not dict or type(header.get("n")) is not list:
        raise WireError("bad header")
    sizes = header["n"]
    if not all(type(s) is int and s >= 0 for s in sizes) or sum(sizes) != len(data) - start - n:
        raise WireError("buffer sizes do not add up")
    buffers, pos = [], start + n
    for s in sizes:
        buffers.append(data[pos:pos + s])
        pos += s
    return _Decoder(buffers, refs).dec(header.get("v"))
