"""The reliability diagram reads the bins `metazoo eval` writes, and names a file without them."""

import json

import pytest

from metazoo.errors import CheckpointError
from metazoo.plot_reliability import has_reliability, plot_reliability


def test_draws_the_bins_of_results_json(tmp_path):
    bins = {"bins": 3, "upper_edge": [1 / 3, 2 / 3, 1.0], "count": [0, 4, 6],
            "confidence": [None, 0.5, 0.9], "accuracy": [None, 0.75, 0.8]}
    (tmp_path / "results.json").write_text(json.dumps(
        {"algorithm": "protonet", "ece": 0.1, "episodes": 2, "split": "test",
         "reliability": bins}))
    assert has_reliability(tmp_path)
    assert plot_reliability(tmp_path).stat().st_size > 1000


@pytest.mark.parametrize("results", ['{"accuracy": 0.9}', "{not json", None])
def test_results_without_bins_are_named(tmp_path, results):
    if results is not None:
        (tmp_path / "results.json").write_text(results)
    assert not has_reliability(tmp_path)
    with pytest.raises(CheckpointError, match=r"no reliability bins.*metazoo eval"):
        plot_reliability(tmp_path)


def test_learning_curves_label_the_episodes_of_each_split():
    from metazoo.plots import _episodes

    assert _episodes(5, 1, None) == "5-way 1-shot"
    assert _episodes(1, 10, 3) == "10-shot, 3 inner steps"  # regression has one "way"
