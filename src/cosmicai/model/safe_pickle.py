"""Read PyTorch pickle files (`torch.save`) without running any code from them.

A restricted unpickler that rebuilds only tensors (from their storages), plain containers and
the state of objects. A class it does not know (the model's own classes, timm's, torch.nn's)
becomes an inert `Record` of the attributes it was pickled with; nothing is imported. Every
other global a pickle names (os.system, subprocess, builtins.eval/exec/getattr, functools.partial,
torch.load...) is refused with an error naming the file and the global, before anything runs.
Reads the zip format of torch >= 1.6 (data.pkl + data/<key> storages) and the legacy format.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import os
import pickle
import struct
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cosmicai.errors import CosmicaiError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}
STORAGE_MODULES = ("torch", "torch.storage", "torch.cuda")
DTYPES = {name: value for name, value in vars(torch).items() if isinstance(value, torch.dtype)}  # vars: no lazy imports

# Classes from these packages are never taken as inert records: a pickle naming them is refused.
# (Python's standard library covers os, posix, subprocess, builtins, functools, pickle, ...)
REFUSED_PACKAGES = frozenset(sys.stdlib_module_names) | {"torch", "numpy", "dill", "cloudpickle", "joblib", "pandas"}
# ...except the torch classes whose instances hold only state: modules, wrappers and datasets.
RECORD_TORCH_MODULES = ("torch.nn.modules.", "torch.nn.parallel.", "torch.utils.data.dataset")


class UnsafePickleError(CosmicaiError):
    """The pickle names a callable that could run code; nothing of it was executed."""


class Record:
    """An inert stand-in for an instance of a class that was not imported: its pickled arguments and state."""

    pickled_class = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Record:
        obj = super().__new__(cls)
        obj.args, obj.kwargs, obj.state = args, kwargs, {}
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        # state is the attribute dict, or (dict, slots dict) for classes with __slots__
        if isinstance(state, tuple) and len(state) == 2 and all(s is None or isinstance(s, dict) for s in state):
            self.state = {**(state[0] or {}), **(state[1] or {})}
        elif isinstance(state, dict):
            self.state = dict(state)
        else:
            self.state = {"__state__": state}

    def __repr__(self) -> str:
        return f"<record of {self.pickled_class}>"


class _Storage:
    """The flat data behind one or more tensors."""

    def __init__(self, dtype: torch.dtype, data: torch.Tensor) -> None:
        self.dtype = dtype
        self.data = data


class _StorageType:
    """The storage class a persistent id names (e.g. torch.FloatStorage): only its dtype matters."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


def _view(storage: object, offset: object, size: object, stride: object) -> torch.Tensor:
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(f"a tensor is rebuilt from {type(storage).__name__}, not from a storage")
    if not (isinstance(offset, int) and _ints(size) and _ints(stride) and len(size) == len(stride)):
        raise pickle.UnpicklingError("a tensor has a malformed offset, size or stride")
    try:
        return torch.as_strided(storage.data, tuple(size), tuple(stride), offset)
    except RuntimeError as exc:
        raise pickle.UnpicklingError(f"a tensor does not fit its storage: {exc}") from None


def _ints(seq: object) -> bool:
    return isinstance(seq, (tuple, list, torch.Size)) and all(isinstance(i, int) and i >= 0 for i in seq)


def _rebuild_tensor(storage: object, offset: object, size: object, stride: object) -> torch.Tensor:
    return _view(storage, offset, size, stride)


def _rebuild_tensor_v2(
    storage: object,
    offset: object,
    size: object,
    stride: object,
    requires_grad: object = False,
    backward_hooks: object = None,
    metadata: object = None,
) -> torch.Tensor:
    return _view(storage, offset, size, stride)  # hooks and metadata are dropped: nothing to call later


def _rebuild_tensor_v3(
    storage: object,
    offset: object,
    size: object,
    stride: object,
    requires_grad: object,
    backward_hooks: object,
    dtype: object,
    metadata: object = None,
) -> torch.Tensor:
    if not (isinstance(storage, _Storage) and isinstance(dtype, torch.dtype)):
        raise pickle.UnpicklingError("a tensor is rebuilt from something that is not a storage")
    return _view(_Storage(dtype, storage.data.view(dtype)), offset, size, stride)


def _rebuild_parameter(data: object, requires_grad: object, backward_hooks: object, state: object = None) -> torch.Tensor:
    if not torch.is_tensor(data):
        raise pickle.UnpicklingError("a parameter is rebuilt from something that is not a tensor")
    return data  # parameters come back as plain tensors; their extra attributes are dropped


def _rebuild_from_type(func: Callable, new_type: object, args: tuple, state: object = None) -> Any:
    if func not in SAFE_CALLABLES.values():
        raise pickle.UnpicklingError("a tensor subclass is rebuilt with an unexpected function")
    return func(*args)


def _device(*args: object) -> torch.device:
    if not all(isinstance(a, (str, int)) for a in args):
        raise pickle.UnpicklingError("torch.device with arguments that are not a name and index")
    return torch.device(*args)


def _reconstructor(cls: object, base: object, state: object) -> Record:
    # copyreg._reconstructor (pickle protocols 0 and 1) for plain objects: only records are made
    if isinstance(cls, type) and issubclass(cls, Record) and base is object:
        return cls()
    raise pickle.UnpicklingError("copyreg._reconstructor for something that is not a plain object")


SAFE_CALLABLES: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type"): _rebuild_from_type,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch", "device"): _device,
    ("torch", "Size"): torch.Size,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "list"): list,
    ("builtins", "dict"): dict,
    ("builtins", "tuple"): tuple,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "object"): object,
    ("copyreg", "_reconstructor"): _reconstructor,
}
# Types the NEWOBJ opcode may instantiate (cls.__new__(cls, *args)) besides records.
NEW_OK = (collections.OrderedDict, set, frozenset, list, dict, tuple, torch.Size)


def _record_class(module: str, name: str) -> type[Record] | None:
    """An inert record type for a class-like global outside the refused packages, else None."""
    top = module.split(".")[0]
    torch_record = any(module.startswith(m) for m in RECORD_TORCH_MODULES)
    if top in REFUSED_PACKAGES and not torch_record:
        return None
    parts = name.split(".")
    if not all(p.isidentifier() for p in parts) or not parts[-1][:1].isupper():
        return None  # by convention classes are capitalised; a lower-case global is a function
    return type(parts[-1], (Record,), {"pickled_class": f"{module}.{name}", "__module__": __name__})


class _Unpickler(pickle._Unpickler):  # the Python implementation, so opcodes can be restricted
    """pickle.Unpickler that resolves globals only to the safe set above, or to inert records."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: io.BufferedIOBase, source: Path, persistent: Callable[[Any], Any] | None) -> None:
        super().__init__(file, encoding="utf-8")
        self.source = source
        self.persistent = persistent
        self.records: dict[tuple[str, str], type[Record]] = {}

    def find_class(self, module: str, name: str) -> Any:
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in SAFE_CALLABLES:
            return SAFE_CALLABLES[(module, name)]
        if module == "torch" and name in DTYPES:
            return DTYPES[name]
        if module in STORAGE_MODULES and name in STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) not in self.records:
            record = _record_class(module, name)
            if record is None:
                raise UnsafePickleError(
                    self.source,
                    f"refused to unpickle: it calls {module}.{name}, which is not a tensor, container or class "
                    "and could run code; nothing from the file was executed",
                )
            self.records[(module, name)] = record
        return self.records[(module, name)]

    def persistent_load(self, pid: Any) -> Any:
        if self.persistent is None:
            raise pickle.UnpicklingError("unexpected persistent id")
        return self.persistent(pid)

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if not isinstance(inst, Record):
            raise pickle.UnpicklingError(f"refusing to set state on {type(inst).__name__}")
        inst.__setstate__(state)

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(_new(cls, args, {}))

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(_new(cls, args, kwargs))

    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex


def _new(cls: object, args: tuple, kwargs: dict) -> Any:
    if isinstance(cls, type) and (issubclass(cls, Record) or cls in NEW_OK):
        return cls.__new__(cls, *args, **kwargs)
    raise pickle.UnpicklingError(f"refusing to instantiate {cls!r}")


def _storage_type(value: object) -> _StorageType:
    if not isinstance(value, _StorageType):
        raise pickle.UnpicklingError(f"storage of unknown type {value!r}")
    return value


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()


def _from_bytes(data: bytes, dtype: torch.dtype) -> torch.Tensor:
    if not data:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=dtype)


def _load_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as zf:
        pkls = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise CosmicaiError(path, "not a PyTorch file: a zip archive without one <name>/data.pkl")
        prefix = pkls[0][: -len("data.pkl")]
        if prefix + "byteorder" in zf.namelist() and zf.read(prefix + "byteorder").strip() != b"little":
            raise CosmicaiError(path, "big-endian PyTorch files are not supported")
        storages: dict[str, _Storage] = {}

        def persistent(pid: Any) -> _Storage:
            if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
                raise pickle.UnpicklingError(f"unexpected persistent id {str(pid)[:80]}")
            _, stype, key, _location, numel = pid  # the location (cpu, cuda:0...) is ignored: all on the CPU
            stype = _storage_type(stype)
            if key not in storages:
                name = f"{prefix}data/{key}"
                if not isinstance(numel, int) or zf.getinfo(name).file_size != numel * _itemsize(stype.dtype):
                    raise pickle.UnpicklingError(f"storage {key} does not hold {numel} elements")  # checked before reading
                storages[key] = _Storage(stype.dtype, _from_bytes(zf.read(name), stype.dtype))
            return storages[key]

        with zf.open(pkls[0]) as f:
            return _Unpickler(f, path, persistent).load()


def _load_legacy(path: Path) -> Any:
    with open(path, "rb") as f:
        try:
            magic = _Unpickler(f, path, None).load()
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, IndexError, struct.error, UnicodeDecodeError):
            magic = None
        if magic != LEGACY_MAGIC:
            raise CosmicaiError(path, "not a PyTorch file (neither a torch.save zip archive nor the legacy format)")
        _Unpickler(f, path, None).load()  # protocol version
        _Unpickler(f, path, None).load()  # sys info
        storages: dict[str, _Storage] = {}
        file_size = path.stat().st_size

        def persistent(pid: Any) -> Any:
            if isinstance(pid, tuple) and len(pid) == 4 and pid[0] == "module":
                return pid[1]  # the class of a pickled module (saved with its source, which is ignored)
            if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
                raise pickle.UnpicklingError(f"unexpected persistent id {str(pid)[:80]}")
            _, stype, key, _location, numel, view = pid
            stype = _storage_type(stype)
            if not isinstance(numel, int) or numel < 0 or numel * _itemsize(stype.dtype) > file_size:
                raise pickle.UnpicklingError("malformed storage size")  # checked before allocating
            if key not in storages:
                storages[key] = _Storage(stype.dtype, torch.zeros(numel, dtype=stype.dtype))
            base = storages[key]
            if view is not None:
                _view_key, offset, size = view
                return _Storage(base.dtype, base.data[offset : offset + size])
            return base

        result = _Unpickler(f, path, persistent).load()
        keys = _Unpickler(f, path, None).load()
        if not isinstance(keys, list) or any(k not in storages for k in keys):
            raise pickle.UnpicklingError("the storage list does not match the pickle")
        for key in keys:
            st = storages[key]
            (numel,) = struct.unpack("<q", f.read(8))
            nbytes = numel * st.data.element_size()
            data = f.read(nbytes)
            if numel != st.data.numel() or len(data) != nbytes:
                raise pickle.UnpicklingError(f"storage {key} is truncated or has the wrong size")
            st.data.copy_(_from_bytes(data, st.dtype))
        return result


def safe_load(path: str | os.PathLike) -> Any:
    """Unpickle a torch.save file with tensors on the CPU, unknown classes as Records; raise CosmicaiError."""
    path = Path(path)
    if not path.is_file():
        raise CosmicaiError(path, "no such file")
    try:
        return _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
    except CosmicaiError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        RuntimeError,
        struct.error,
        zipfile.BadZipFile,
        UnicodeDecodeError,
        RecursionError,
    ) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CosmicaiError(path, f"not a readable PyTorch file ({detail})") from None


def module_state_dict(obj: Any, source: object) -> dict[str, torch.Tensor]:
    """The state_dict of a pickled module given as Records: parameters, persistent buffers, then submodules."""
    out: dict[str, torch.Tensor] = {}
    _collect(obj, "", out, source, depth=0)
    return out


def _collect(rec: Any, prefix: str, out: dict, source: object, depth: int) -> None:
    if depth > 100:
        raise CosmicaiError(source, "module tree deeper than 100 levels (a cycle?)")
    if not (isinstance(rec, Record) and isinstance(rec.state.get("_modules"), dict)):
        raise CosmicaiError(source, f"{prefix.rstrip('.') or 'the pickled object'} is not a torch module")
    state = rec.state
    skip = state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if value is None or (group == "_buffers" and name in skip):
                continue
            if not torch.is_tensor(value):
                raise CosmicaiError(source, f"{prefix}{name} is not a tensor")
            out[prefix + name] = value
    for name, child in state["_modules"].items():
        if child is not None:
            _collect(child, f"{prefix}{name}.", out, source, depth + 1)


def is_module(obj: Any) -> bool:
    """Whether an unpickled object is a record of a torch module."""
    return isinstance(obj, Record) and isinstance(obj.state.get("_modules"), dict)
