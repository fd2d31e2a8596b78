"""Read a PyTorch state-dict file into numpy arrays, without torch and without running its code.

A ``.pth`` file is a pickle; unpickling one with :mod:`pickle` may run any code it names. This
reader unpickles with an allow-list, the same one ``torch.load(weights_only=True)`` applies to a
state dict: ordered dicts, tensors (``torch._utils._rebuild_tensor_v2``) and the typed storage
classes. Anything else in the file is refused with :class:`~tlcore.errors.TlcoreError`. Both
layouts ``torch.save`` has written are read: the zip archive (PyTorch 1.6 and later) and the
older stream of pickles followed by raw storages.

The core uses it so that published PyTorch weights reach every backend as numpy: the Keras
backend builds EfficientNet-Lite from the same file without importing torch.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from tlcore.errors import TlcoreError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

#: ``torch.<Name>Storage`` → numpy dtype (little-endian, as torch writes them).
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


@dataclass
class _Storage:
    """A storage named in the pickle; its bytes are read after the pickle (legacy layout)."""

    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass
class _Tensor:
    """A tensor rebuilt lazily: storage, offset, shape and strides in elements."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def array(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise TlcoreError(f"storage {self.storage.key} has no data", _CORRUPT_HINT)
        spans = zip(self.shape, self.stride, strict=True)
        needed = self.offset + sum((n - 1) * s for n, s in spans)
        if self.shape and min(self.shape) > 0 and needed >= len(data):
            raise TlcoreError(f"a tensor reads past its storage {self.storage.key}", _CORRUPT_HINT)
        itemsize = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.shape,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view, copy=True)


def _rebuild_tensor_v2(
    storage: _Storage, offset: int, shape: tuple, stride: tuple, *_: Any
) -> _Tensor:
    sizes, strides = tuple(int(n) for n in shape), tuple(int(s) for s in stride)
    return _Tensor(storage, int(offset), sizes, strides)


class _StorageType:
    """Stands for ``torch.<Name>Storage`` inside the pickle."""

    def __init__(self, name: str) -> None:
        self.dtype = _STORAGE_DTYPES[name]


_CORRUPT_HINT = "the file is damaged or not a PyTorch state dict; download or export it again"


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise TlcoreError(
            f"refusing to load {module}.{name} from a weights file: only tensors and dicts "
            "are allowed (the file may run code when unpickled)",
            "use a state dict saved with torch.save(model.state_dict(), path)",
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise TlcoreError(f"unexpected persistent id {pid!r:.80}", _CORRUPT_HINT)
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise TlcoreError(f"unknown storage type {storage_type!r:.80}", _CORRUPT_HINT)
        if key not in self.storages:
            self.storages[key] = _Storage(key, storage_type.dtype, numel)
        return self.storages[key]


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a ``torch.save``'d state dict, by name, as numpy arrays.

    Args:
        path: a ``.pth`` / ``.pt`` file holding a (possibly nested under ``state_dict``)
            mapping of names to tensors.

    Returns:
        ``{name: array}`` in the file's order; each array owns its memory.

    Raises:
        TlcoreError: the file is missing, damaged, not a state dict, or names anything
            besides tensors and dicts.
    """
    path = Path(path)
    if not path.is_file():
        raise TlcoreError(f"weights file not found: {path}", "give the path of a .pth file")
    try:
        if zipfile.is_zipfile(path):
            obj = _read_zip(path)
        else:
            with path.open("rb") as f:
                obj = _read_legacy(f)
    except (pickle.UnpicklingError, EOFError, struct.error, ValueError, KeyError) as exc:
        raise TlcoreError(f"cannot read {path}: {exc}", _CORRUPT_HINT) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, _Tensor) for v in obj.values()):
        raise TlcoreError(f"{path} does not hold a state dict of tensors", _CORRUPT_HINT)
    return {str(name): tensor.array() for name, tensor in obj.items()}


def _read_legacy(f: IO[bytes]) -> Any:
    """``torch.save(..., _use_new_zipfile_serialization=False)``: three header pickles, the
    object, the sorted storage keys, then each storage as an int64 count and its raw bytes."""
    header = _Unpickler(f, {})
    if header.load() != _LEGACY_MAGIC:
        raise ValueError("not a PyTorch file (bad magic number)")
    if _Unpickler(f, {}).load() != _LEGACY_PROTOCOL:
        raise ValueError("unsupported PyTorch file protocol")
    _Unpickler(f, {}).load()  # system info: byte order and type sizes, all little-endian here
    storages: dict[str, _Storage] = {}
    obj = _Unpickler(f, storages).load()
    keys = _Unpickler(f, storages).load()
    for key in keys:
        storage = storages[str(key)]
        (count,) = struct.unpack("<q", f.read(8))
        raw = f.read(count * storage.dtype.itemsize)
        if count != storage.numel or len(raw) != count * storage.dtype.itemsize:
            raise ValueError(f"storage {key} is truncated")
        storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return obj


def _read_zip(path: Path) -> Any:
    """The zip layout: ``<root>/data.pkl`` and one raw file per storage, ``<root>/data/<key>``."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pickles:
            raise ValueError("no data.pkl in the archive")
        root = pickles[0][: -len("data.pkl")]
        storages: dict[str, _Storage] = {}
        obj = _Unpickler(io.BytesIO(archive.read(pickles[0])), storages).load()
        for key, storage in storages.items():
            raw = archive.read(f"{root}data/{key}")
            if len(raw) != storage.numel * storage.dtype.itemsize:
                raise ValueError(f"storage {key} has {len(raw)} bytes")
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return obj
