"""Reading the pickled files some datasets are published as, without running their code.

Why: `pickle.load` calls any function a file names, so a downloaded "dataset cache" can run
`os.system` on load. CIFAR-100 (`cifar-100-python/{train,test,meta}`) and the miniImageNet caches
(`mini-imagenet-cache-*.pkl`) only need dicts, lists, strings, numbers and numpy arrays, so
`RestrictedUnpickler` admits exactly the globals that rebuild numpy arrays, dtypes and scalars
(under their numpy 1 and numpy 2 module names) and a latin-1-only `_codecs.encode` (how Python 3
writes `bytes` at protocol 2), and refuses every other global with a one-line `DataError` before
anything is called.

Python 2 pickles (CIFAR-100's) store `str` as raw bytes; they load with `encoding="latin1"` (numpy
arrays included, as numpy documents), and `bytes` dict keys from any writer become `str`.
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from metazoo.errors import DataError

_NUMPY_CORE = ("numpy.core", "numpy._core")  # numpy 1 / numpy 2 names of the same module


def _core(submodule: str, name: str) -> Callable[[], Any]:
    """A resolver of `numpy._core.<submodule>.<name>` (numpy 2) or `numpy.core...` (numpy 1)."""

    def resolve() -> Any:
        try:
            import numpy._core as core  # numpy >= 2
        except ImportError:  # pragma: no cover - numpy 1
            import numpy.core as core  # type: ignore[no-redef]
        return getattr(getattr(core, submodule), name)

    return resolve


def _latin1_encode(obj: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """`_codecs.encode` as Python 3 pickles `bytes` at protocol <= 2, limited to latin-1."""
    try:
        latin1 = codecs.lookup(encoding).name == "iso8859-1"
    except LookupError:
        latin1 = False
    if not latin1:
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return obj.encode("latin1", errors)


_ALLOWED: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: _latin1_encode,
    ("builtins", "set"): lambda: set,
    ("builtins", "frozenset"): lambda: frozenset,
    ("builtins", "bytearray"): lambda: bytearray,
    ("__builtin__", "set"): lambda: set,
    ("__builtin__", "frozenset"): lambda: frozenset,
    ("__builtin__", "bytearray"): lambda: bytearray,
}
for _prefix in _NUMPY_CORE:
    _ALLOWED[(f"{_prefix}.multiarray", "_reconstruct")] = _core("multiarray", "_reconstruct")
    _ALLOWED[(f"{_prefix}.multiarray", "scalar")] = _core("multiarray", "scalar")
    _ALLOWED[(f"{_prefix}.numeric", "_frombuffer")] = _core("numeric", "_frombuffer")

ALLOWED_GLOBALS: frozenset[str] = frozenset(f"{m}.{n}" for m, n in _ALLOWED)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds dicts, lists, strings, numbers and numpy arrays only.

    Args:
        file: a binary file object positioned at the pickle.
        name: what to call the file in error messages.
        encoding: how Python 2 `str` objects are decoded ("latin1" keeps numpy arrays intact).
    """

    def __init__(self, file: IO[bytes], name: str, *, encoding: str = "latin1") -> None:
        super().__init__(file, encoding=encoding)
        self.name = name

    def find_class(self, module: str, name: str) -> Any:
        resolve = _ALLOWED.get((module, name))
        if resolve is None:
            raise DataError(f"{self.name}: refuses global {module}.{name}: not a dataset cache; "
                            "delete the file and get it from the official release")
        return resolve()

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self.name}: refuses a persistent id: not a dataset cache; delete the "
                        "file and get it from the official release")


def _normalise(obj: Any) -> Any:
    """Dicts with `bytes` keys (Python 2 pickles read with encoding="bytes") get `str` keys."""
    if isinstance(obj, dict):
        return {(k.decode("latin1") if isinstance(k, bytes) else k): _normalise(v)
                for k, v in obj.items()}
    return obj


def load_pickle(fileobj_or_path: IO[bytes] | bytes | str | os.PathLike[str], name: str,
                encoding: str = "latin1") -> Any:
    """Unpickle a dataset file with `RestrictedUnpickler`; dict keys come back as `str`.

    Args:
        fileobj_or_path: a binary file object, the file's bytes, or its path.
        name: the file's name for error messages, e.g. "cifar-100-python.tar.gz:.../meta".
        encoding: how Python 2 strings are decoded (see `RestrictedUnpickler`).

    Raises:
        DataError: a global other than the numpy/builtin ones is named (nothing is called), the
            file is missing, or it is not a complete pickle.
    """
    try:
        if isinstance(fileobj_or_path, (str, os.PathLike)):
            with open(Path(fileobj_or_path), "rb") as f:
                return _normalise(RestrictedUnpickler(f, name, encoding=encoding).load())
        fp = io.BytesIO(fileobj_or_path) if isinstance(fileobj_or_path, bytes) else \
            fileobj_or_path
        return _normalise(RestrictedUnpickler(fp, name, encoding=encoding).load())
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{name} not found; place the file from the official release there"
                        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, struct.error, OSError, MemoryError, RecursionError) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{name} is not a readable pickle ({detail}); it may be truncated or "
                        "damaged: delete it and get it from the official release again") from None
