"""Planetoid files written by the test in the published layout: Python 2 style pickles (protocol
2, `scipy.sparse.csr.csr_matrix`, `collections.defaultdict(list)`), read without scipy."""

import pickle
import sys
import types
from collections import defaultdict

import numpy as np
import pytest
import torch

from metazoo.errors import DataError
from metazoo.graph.planetoid import load_planetoid

D, C = 5, 3


def _csr_pickle(dense: np.ndarray, monkeypatch) -> bytes:
    """A protocol-2 pickle of a CSR matrix naming `scipy.sparse.csr.csr_matrix`, as the files do
    (written through a stand-in class whose module name is swapped in the bytes)."""
    mod = types.ModuleType("fixturecsr")
    cls = type("csr_matrix", (), {"__module__": "fixturecsr"})
    mod.csr_matrix = cls
    monkeypatch.setitem(sys.modules, "fixturecsr", mod)
    m = cls()
    rows, cols = np.nonzero(dense)
    m.__dict__.update({"_shape": dense.shape, "maxprint": 50, "format": "csr",
                       "data": dense[rows, cols].astype(np.float32),
                       "indices": cols.astype(np.int32),
                       "indptr": np.concatenate([[0], np.cumsum((dense != 0).sum(1))]).astype(
                           np.int32)})
    raw = pickle.dumps(m, protocol=2)
    assert b"cfixturecsr\ncsr_matrix\n" in raw
    return raw.replace(b"cfixturecsr\ncsr_matrix\n", b"cscipy.sparse.csr\ncsr_matrix\n")


def write_planetoid(folder, monkeypatch, name="toy"):
    """12 nodes: train 0-2, all-x 0-7, test ids 11, 8, 9 in file order (10 is a gap)."""
    g = np.random.default_rng(0)
    allx = (g.random((8, D)) < 0.5).astype(np.float32)
    tx = (g.random((3, D)) < 0.5).astype(np.float32)
    ally = np.eye(C, dtype=np.int32)[[0, 1, 2, 0, 1, 2, 0, 1]]
    ty = np.eye(C, dtype=np.int32)[[2, 0, 1]]
    graph = defaultdict(list, {i: [(i + 1) % 12] for i in range(12)})
    graph[4].append(9)
    files = {"x": _csr_pickle(allx[:3], monkeypatch), "allx": _csr_pickle(allx, monkeypatch),
             "tx": _csr_pickle(tx, monkeypatch), "y": pickle.dumps(ally[:3], protocol=2),
             "ally": pickle.dumps(ally, protocol=2), "ty": pickle.dumps(ty, protocol=2),
             "graph": pickle.dumps(graph, protocol=2)}
    assert b"ccollections\ndefaultdict\n" in files["graph"]
    for part, blob in files.items():
        (folder / f"ind.{name}.{part}").write_bytes(blob)
    (folder / f"ind.{name}.test.index").write_text("11\n8\n9\n")
    return allx, tx


def test_fixture_loads_with_the_published_shapes_and_split(tmp_path, monkeypatch):
    allx, tx = write_planetoid(tmp_path, monkeypatch)
    graph = load_planetoid(tmp_path, "toy")
    assert graph.features.shape == (12, D) and graph.adjacency.shape == (12, 12)
    assert torch.equal(graph.features[:8], torch.from_numpy(allx))
    assert torch.equal(graph.features[11], torch.from_numpy(tx[0]))  # test rows by test.index
    assert torch.equal(graph.features[8], torch.from_numpy(tx[1]))
    assert not graph.features[10].any() and graph.labels[10] == -1  # the gap
    assert graph.labels.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 0, 1, -1, 2]
    assert graph.train.tolist() == [0, 1, 2] and graph.val.tolist() == [3, 4, 5, 6, 7]
    assert graph.test.tolist() == [8, 9, 11]
    assert graph.num_edges == 13 and graph.adjacency[4, 9] == graph.adjacency[9, 4] == 1
    assert graph.adjacency[11, 0] == 1  # the ring closes


def test_code_in_a_file_is_refused_and_not_run(tmp_path, monkeypatch):
    write_planetoid(tmp_path, monkeypatch)
    (tmp_path / "ind.toy.graph").write_bytes(b"cos\nsystem\n(S'touch /tmp/pwned'\ntR.")
    with pytest.raises(DataError, match=r"refuses global os\.system"):
        load_planetoid(tmp_path, "toy")


def test_missing_and_mismatched_files_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"no ind\.toy\.x in"):
        load_planetoid(tmp_path, "toy")
    write_planetoid(tmp_path, monkeypatch)
    (tmp_path / "ind.toy.test.index").write_text("8\n9\n")
    with pytest.raises(DataError, match="do not belong together"):
        load_planetoid(tmp_path, "toy")
