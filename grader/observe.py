"""The observer: what runs where the student's code runs.

It holds the student's objects, calls them on inputs it is handed, and answers with what it
saw as plain data (see `grader.wire`). It contains no reference, no expected value and no
verdict: a check (the judge, in the grader's own process) decides. A notebook that tampers with
this module, with torch or with builtins can only change what the observer reports, and a
report is judged against references on inputs the notebook has never seen.

Requests (decoded from `grader.wire`) are dicts with an "op":

- ``global``   {name}                       the object a notebook defined under `name`
- ``call``     {fn, args, kwargs, guard}    call student code (fn may be ["attr", ref, name])
- ``getattr``  {obj, name, guard}           read an attribute (properties are student code)
- ``setattr``  {obj, name, value}
- ``list``     {obj, guard, limit}          iterate (a generator, a DataLoader, ...)
- ``len``      {obj, guard}
- ``build``    {kind, args, kwargs}         make an input object (a model, a loader, a probe)
- ``release``  {ids}
- ``batch``    {requests}

`guard` holds the forbidden torch functions and Python places of the exercise, whether inputs
may be modified, and what to send back of them.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
import sys
import traceback
import warnings

import torch
from torch.overrides import TorchFunctionMode

from grader import wire

_HERE = os.path.dirname(os.path.abspath(__file__))
_TORCH = os.path.dirname(torch.__file__)
OUTPUT_CAP = 64 * 1024

BUILDERS: dict = {}


def builder(name: str):
    """Register a function that builds an input object inside the kernel (public code only)."""
    def register(fn):
        BUILDERS[name] = fn
        return fn
    return register


def resolve(path: str):
    """`torch.nn.functional.softmax` -> the object, by attribute lookups from a module."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for p in parts[i:]:
            obj = getattr(obj, p)
        return obj
    raise ImportError(path)


class _Forbidden(TorchFunctionMode):
    def __init__(self, table: dict):
        super().__init__()
        self.table = table
        self.used: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        label = self.table.get(func)
        if label and label not in self.used:
            self.used.append(label)
        return func(*args, **(kwargs or {}))


class _Places:
    """A profile hook noting calls of Python functions defined in forbidden places."""

    def __init__(self, places):
        self.places = places
        self.used: list[str] = []

    def __call__(self, frame, event, arg):
        if event != "call":
            return
        code = frame.f_code
        for directory, names, label in self.places:
            if code.co_filename.startswith(directory) and (names is None or code.co_name in names):
                where = os.path.relpath(code.co_filename, os.path.dirname(directory))
                text = label or f"{code.co_name} (from {where})"
                if label and names is not None:
                    text = f"{code.co_name} (from {label})"
                if text not in self.used:
                    self.used.append(text)


def _module_dir(name: str) -> str | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    return os.path.dirname(spec.origin) if spec.origin.endswith("__init__.py") else spec.origin


def _tensors(x, depth=0):
    """(path, tensor) for the tensors in x, its lists, tuples and dicts (two levels)."""
    if type(x) in (torch.Tensor, torch.nn.Parameter):
        yield (), x
    elif depth < 2 and type(x) in (list, tuple):
        for i, v in enumerate(x):
            for p, t in _tensors(v, depth + 1):
                yield (i, *p), t
    elif depth < 2 and type(x) is dict:
        for k, v in x.items():
            for p, t in _tensors(v, depth + 1):
                yield (k, *p), t


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(
        torch.nan_to_num(a.detach()), torch.nan_to_num(b))


def _student_line(exc: BaseException) -> dict | None:
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith((_HERE, _TORCH))]
    if not frames:
        return None
    f = frames[-1]
    return {"function": f.name, "line": f.lineno, "text": (f.line or "").strip()[:200],
            "file": f.filename if f.filename.startswith("<") else os.path.basename(f.filename)}


class Observer:
    """Objects of one kernel (or one in-process run) and the operations on them."""

    def __init__(self, namespace: dict | None = None):
        self.namespace = namespace if namespace is not None else {}
        self.objects: dict[int, object] = {}
        self.next_id = 1

    # -- references -------------------------------------------------------------------
    def keep(self, obj) -> dict:
        i = self.next_id
        self.next_id += 1
        self.objects[i] = obj
        t = type(obj)
        mro = [wire.type_path(c) for c in t.__mro__[:12]]
        info = {}
        if isinstance(obj, torch.nn.Module):
            try:
                info["training"] = bool(torch.nn.Module.__getattribute__(obj, "training"))
            except Exception:  # noqa: BLE001 - a broken module is still a reference
                pass
        return {"$obj": i, "type": wire.type_path(t), "mro": mro, "callable": callable(obj),
                "info": info}

    def _ref(self, ref: wire.Ref):
        if ref.id not in self.objects:
            raise KeyError(f"unknown reference {ref.id}")
        return self.objects[ref.id]

    def encode(self, value) -> bytes:
        return wire.dumps(value, opaque=self.keep)

    def decode(self, data: bytes):
        return wire.loads(data, refs=self._ref)

    # -- the guarded call -------------------------------------------------------------
    def _guarded(self, guard: dict, fn, args=(), kwargs=None):
        """Run fn(*args, **kwargs) with the exercise's restrictions; return a report."""
        kwargs = kwargs or {}
        guard = guard or {}
        table = {}
        for path, label in guard.get("torch", []):
            try:
                table[resolve(path)] = label
            except (ImportError, AttributeError):
                continue
        places = []
        for module, names, label in guard.get("python", []):
            directory = _module_dir(module)
            if directory:
                places.append((directory, set(names) if names is not None else None, label))
        snapshot = [] if guard.get("may_modify") else [
            (i, p, t, t.detach().clone()) for i, a in enumerate([*args, *kwargs.values()])
            for p, t in _tensors(a)]
        identities = [[id(v) for v in a] if type(a) is list else None for a in args]
        mode = _Forbidden(table)
        tracer = _Places(places)
        sink = io.StringIO()
        previous = sys.getprofile()
        report: dict = {}
        try:
            with warnings.catch_warnings(), contextlib.redirect_stderr(sink), \
                    contextlib.redirect_stdout(sink), mode:
                warnings.simplefilter("ignore")
                if places:
                    sys.setprofile(tracer)
                try:
                    result = fn(*args, **kwargs)
                finally:
                    sys.setprofile(previous)
        except BaseException as exc:  # noqa: BLE001 - student code may raise anything
            if isinstance(exc, KeyboardInterrupt | SystemExit) and not guard.get("catch_exit"):
                report["raised"] = {"type": type(exc).__name__, "message": str(exc)[:2000],
                                    "not_implemented": False, "where": None}
            else:
                report["raised"] = {"type": type(exc).__name__, "message": str(exc)[:2000],
                                    "not_implemented": isinstance(exc, NotImplementedError),
                                    "where": _student_line(exc)}
            result = None
        report["used_torch"] = mode.used
        report["used_python"] = tracer.used
        modified = []
        for i, p, t, copy in snapshot:
            if not _same(t, copy):
                modified.append([i, list(p), list(copy.shape)])
        report["modified"] = modified
        if "raised" not in report:
            report["result"] = result
        if guard.get("return_args"):
            report["args"] = list(args)
            report["replaced"] = [
                [i, [j for j, (old, v) in enumerate(zip(before, a)) if id(v) != old]]
                for i, (before, a) in enumerate(zip(identities, args))
                if before is not None and type(a) is list]
        return report

    # -- operations -------------------------------------------------------------------
    def op(self, req: dict):
        kind = req.get("op")
        if kind == "batch":
            return [self.op(r) for r in req["requests"]]
        if kind == "global":
            name = req["name"]
            if name not in self.namespace:
                return {"missing": True}
            return {"result": self.namespace[name]}
        if kind == "call":
            fn = req["fn"]
            if type(fn) is list and fn and fn[0] == "attr":  # a method: getattr inside the guard
                obj, name = fn[1], fn[2]
                return self._guarded(req.get("guard"), lambda *a, **k: getattr(obj, name)(*a, **k),
                                     req.get("args", []), req.get("kwargs", {}))
            return self._guarded(req.get("guard"), fn, req.get("args", []), req.get("kwargs", {}))
        if kind == "getattr":
            return self._guarded(req.get("guard"), getattr, [req["obj"], req["name"]])
        if kind == "setattr":
            return self._guarded(req.get("guard") or {"may_modify": True}, setattr,
                                 [req["obj"], req["name"], req["value"]])
        if kind == "list":
            limit = int(req.get("limit", 100000))

            def collect(obj):
                out = []
                for item in obj:
                    out.append(item)
                    if len(out) > limit:
                        raise RuntimeError(f"more than {limit} items")
                return out
            return self._guarded(req.get("guard"), collect, [req["obj"]])
        if kind == "len":
            return self._guarded(req.get("guard"), len, [req["obj"]])
        if kind == "build":
            name = req["kind"]
            if name not in BUILDERS and "." in name:
                importlib.import_module(f"grader.probes.{name.split('.')[0]}")
            return {"result": BUILDERS[name](*req.get("args", []), **req.get("kwargs", {}))}
        if kind == "release":
            for i in req.get("ids", []):
                self.objects.pop(i, None)
            return {}
        raise ValueError(f"unknown operation {kind!r}")

    def handle(self, data: bytes) -> bytes:
        """One request in, one answer out (both bytes)."""
        try:
            req = self.decode(data)
            answer = self.op(req)
        except Exception as exc:  # noqa: BLE001 - a malformed request is reported, not raised
            answer = {"failed": f"{type(exc).__name__}: {exc}"}
        try:
            return self.encode(answer)
        except Exception as exc:  # noqa: BLE001
            return self.encode({"failed": f"cannot send the answer: {exc}"})


# --- in the kernel ------------------------------------------------------------------------

_KERNEL_OBSERVER: Observer | None = None




# --- builders every chapter may use ---------------------------------------------------------

_LAYERS = {"Linear", "ReLU", "Sigmoid", "Tanh", "Flatten", "Dropout", "Identity", "Softmax",
           "LeakyReLU", "GELU", "BatchNorm1d", "LayerNorm"}


@builder("sequential")
def build_sequential(layers: list, state: dict | None = None, training: bool = True):
    """nn.Sequential from [(layer name, args, kwargs), ...] and an optional state dict."""
    mods = []
    for name, args, kwargs in layers:
        if name not in _LAYERS:
            raise ValueError(f"layer {name!r} not allowed")
        mods.append(getattr(torch.nn, name)(*args, **kwargs))
    net = torch.nn.Sequential(*mods)
    if state:
        net.load_state_dict(state)
    net.train(training)
    return net


@builder("tensor_loader")
def build_tensor_loader(X, y, batch_size: int, shuffle: bool = False, seed: int = 0):
    data = torch.utils.data.TensorDataset(X, y)
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=g)


@builder("loss")
def build_loss(name: str, **kwargs):
    if name not in ("CrossEntropyLoss", "MSELoss", "L1Loss", "NLLLoss", "BCEWithLogitsLoss"):
        raise ValueError(f"loss {name!r} not allowed")
    return getattr(torch.nn, name)(**kwargs)


@builder("optimizer")
def build_optimizer(name: str, params, **kwargs):
    if name not in ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad"):
        raise ValueError(f"optimizer {name!r} not allowed")
    if isinstance(params, torch.nn.Module):
        params = params.parameters()
    return getattr(torch.optim, name)(params, **kwargs)


class ModeWatcher:
    """Records, at every forward of a module, its training flag, grad mode and batch size."""

    def __init__(self, module: torch.nn.Module):
        self.seen: list[dict] = []
        self.module = module
        self.hook = module.register_forward_pre_hook(self._pre)

    def _pre(self, module, inputs):
        x = inputs[0] if inputs else None
        self.seen.append({"training": bool(module.training),
                          "grad_enabled": bool(torch.is_grad_enabled()),
                          "batch": int(x.shape[0]) if isinstance(x, torch.Tensor) and x.dim() else -1})

    def records(self) -> list[dict]:
        return list(self.seen)

    def clear(self) -> None:
        self.seen.clear()


@builder("mode_watcher")
def build_mode_watcher(module):
    return ModeWatcher(module)


@builder("seed_global")
def seed_global(seed: int) -> None:
    """Seed the kernel's global random generator (to test that `generator=` is what counts)."""
    torch.manual_seed(seed)


def serve_loop(path: str, max_request: int = 1 << 30) -> None:
    """Answer requests over a Unix socket at `path` until an empty request arrives.

    The grader starts this in the kernel for the time of one exercise's check: one execute
    request, then as many observations as the check needs, each a length-prefixed message,
    without the notebook machinery of a cell per request.
    """
    import socket
    import struct

    from IPython import get_ipython

    global _KERNEL_OBSERVER
    if _KERNEL_OBSERVER is None:
        ip = get_ipython()
        _KERNEL_OBSERVER = Observer(ip.user_ns if ip is not None else {})
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    server.bind(path)
    server.listen(1)
    server.settimeout(60)
    try:
        conn, _ = server.accept()
    finally:
        server.close()
        try:
            os.unlink(path)
        except OSError:
            pass
    conn.settimeout(None)

    def read(n: int) -> bytes:
        chunks, left = [], n
        while left:
            chunk = conn.recv(min(left, 1 << 20))
            if not chunk:
                raise ConnectionError("closed")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    with conn:
        while True:
            try:
                (n,) = struct.unpack("<Q", read(8))
            except (ConnectionError, OSError):
                return
            if n == 0 or n > max_request:
                return
            answer = _KERNEL_OBSERVER.handle(read(n))
            conn.sendall(struct.pack("<Q", len(answer)) + answer)
