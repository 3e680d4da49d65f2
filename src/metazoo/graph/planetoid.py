"""The Planetoid citation graphs (Cora, Citeseer, Pubmed) from the files users already have.

Format (Yang, Cohen & Salakhutdinov, "Revisiting Semi-Supervised Learning with Graph
Embeddings", ICML 2016, as redistributed with Kipf & Welling's GCN code): `ind.<name>.x`, `.tx`,
`.allx` (scipy CSR feature rows of the training, test and all non-test nodes), `.y`, `.ty`,
`.ally` (numpy one-hot labels), `.graph` (a `defaultdict(list)` of neighbour lists) and
`ind.<name>.test.index` (one test node id a line). They are Python 2 pickles, read with latin-1.

Safety: nothing here calls `pickle.load`. `metazoo.data.safe_pickle.RestrictedUnpickler` (numpy
arrays only) is extended by exactly four stand-ins: `scipy.sparse.csr.csr_matrix` becomes an inert
record whose `data`/`indices`/`indptr`/`_shape` are checked and turned into a dense tensor (scipy
is never imported or called), `copy_reg._reconstructor` accepts only that record,
`collections.defaultdict` only `list` as its factory (it becomes a plain dict), and `list`.

Assembly as in the GCN code: features = [allx; tx] with the test rows placed at the ids of
`test.index`; Citeseer's test ids have gaps (isolated nodes without a file row), which get zero
features and label -1. Published split: train = the first len(y) nodes, val = the next 500, test =
the ids of `test.index`.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metazoo.data.safe_pickle import RestrictedUnpickler
from metazoo.errors import DataError
from metazoo.graph.graphs import Graph

PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph")


class SparseRecord:
    """What a pickled `csr_matrix` becomes: its attributes, nothing callable."""

    def to_dense(self, name: str) -> np.ndarray:
        """The `[rows, cols]` float32 array, after checking the CSR fields agree."""
        state = self.__dict__
        try:
            shape = tuple(int(s) for s in state.get("_shape", state.get("shape", ())))
            data, indices, indptr = (np.asarray(state[k]) for k in ("data", "indices", "indptr"))
            rows, cols = shape
            ok = (len(indptr) == rows + 1 and indptr[-1] == len(indices) == len(data)
                  and indptr[0] == 0 and bool((np.diff(indptr) >= 0).all())
                  and (len(indices) == 0 or 0 <= indices.min() <= indices.max() < cols))
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{name}: not a CSR matrix ({e})") from None
        if not ok:
            raise DataError(f"{name}: inconsistent CSR fields (shape {shape})")
        out = np.zeros(shape, dtype=np.float32)
        row_ids = np.repeat(np.arange(rows), np.diff(indptr))
        out[row_ids, indices] = data
        return out


def _reconstructor(cls: type, base: type, state: Any) -> SparseRecord:
    if cls is not SparseRecord or base is not object or state is not None:
        raise DataError("refuses copy_reg._reconstructor on anything but a CSR matrix")
    return SparseRecord()


def _defaultdict(factory: Any) -> dict[Any, Any]:
    if factory is not list:
        raise DataError("refuses a defaultdict whose factory is not list")
    return {}


_EXTRA: dict[tuple[str, str], Any] = {
    **{(m, "csr_matrix"): SparseRecord for m in ("scipy.sparse.csr", "scipy.sparse._csr")},
    **{(m, "_reconstructor"): _reconstructor for m in ("copy_reg", "copyreg")},
    ("collections", "defaultdict"): _defaultdict,
    ("__builtin__", "list"): list,
    ("builtins", "list"): list,
}


class PlanetoidUnpickler(RestrictedUnpickler):
    """`RestrictedUnpickler` plus the inert stand-ins above."""

    def find_class(self, module: str, name: str) -> Any:
        return _EXTRA.get((module, name)) or super().find_class(module, name)


_DAMAGED = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, struct.error, OSError, MemoryError, RecursionError)


def _read(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return PlanetoidUnpickler(f, path.name).load()
    except FileNotFoundError:
        raise DataError(f"{path} not found; place the Planetoid files (ind.<name>.*) there"
                        ) from None
    except DataError:
        raise
    except _DAMAGED as e:
        raise DataError(f"{path} is not a readable Planetoid pickle ({type(e).__name__})"
                        ) from None


def _matrix(obj: Any, name: str) -> np.ndarray:
    if isinstance(obj, SparseRecord):
        return obj.to_dense(name)
    if isinstance(obj, np.ndarray) and obj.ndim == 2:
        return obj.astype(np.float32)
    raise DataError(f"{name}: expected a CSR matrix or a 2-D array, got {type(obj).__name__}")


def find_folder(root: Path, name: str) -> Path:
    """The folder with `ind.<name>.x`: root, root/planetoid, root/<name>, root/<Name>/raw."""
    tries = [root, root / "planetoid", root / name, root / name.capitalize() / "raw"]
    for folder in tries:
        if (folder / f"ind.{name}.x").exists():
            return folder
    raise DataError(f"no ind.{name}.x in {', '.join(map(str, tries))}; put the Planetoid files "
                    "(ind.<name>.x/y/tx/ty/allx/ally/graph/test.index) in one of them")


def load_planetoid(root: Path, name: str) -> Graph:
    """The graph `name` ("cora", "citeseer", "pubmed") from the Planetoid files under `root`."""
    folder = find_folder(root, name)
    raw = {p: _read(folder / f"ind.{name}.{p}") for p in PARTS}
    x, tx, allx = (_matrix(raw[p], f"ind.{name}.{p}") for p in ("x", "tx", "allx"))
    y, ty, ally = (_matrix(raw[p], f"ind.{name}.{p}") for p in ("y", "ty", "ally"))
    try:
        index_text = (folder / f"ind.{name}.test.index").read_text().split()
        test_ids = np.array([int(t) for t in index_text], dtype=np.int64)
    except (OSError, ValueError) as e:
        raise DataError(f"ind.{name}.test.index: unreadable ({type(e).__name__})") from None
    if len(test_ids) != len(tx) or len(ty) != len(tx) or len(ally) != len(allx) or not len(x):
        raise DataError(f"ind.{name}: {len(test_ids)} test ids, tx {len(tx)} rows, ty {len(ty)}, "
                        f"allx {len(allx)}, ally {len(ally)}: the files do not belong together")
    n = max(len(allx), int(test_ids.max()) + 1)
    features = np.zeros((n, allx.shape[1]), dtype=np.float32)
    onehot = np.zeros((n, ally.shape[1]), dtype=np.float32)
    features[: len(allx)], onehot[: len(allx)] = allx, ally
    features[test_ids], onehot[test_ids] = tx, ty
    labels = np.where(onehot.sum(1) > 0, onehot.argmax(1), -1)
    adjacency = torch.zeros(n, n)
    graph = raw["graph"]
    if not isinstance(graph, dict):
        raise DataError(f"ind.{name}.graph: expected a dict of neighbour lists")
    for u, neighbours in graph.items():
        for v in neighbours:
            if not (0 <= int(u) < n and 0 <= int(v) < n):
                raise DataError(f"ind.{name}.graph: node {u} or {v} outside 0..{n - 1}")
            adjacency[int(u), int(v)] = adjacency[int(v), int(u)] = 1.0
    adjacency.fill_diagonal_(0.0)
    val_end = min(len(y) + 500, len(allx))
    return Graph(adjacency, torch.from_numpy(features), torch.from_numpy(labels).long(), name,
                 train=torch.arange(len(y)), val=torch.arange(len(y), val_end),
                 test=torch.from_numpy(np.sort(test_ids)))
