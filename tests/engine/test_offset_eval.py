"""Santoro et al.'s offset-label protocol end to end: train a sequence learner on label streams,
`metazoo eval RUN --protocol offset_labels`, `metazoo plot`; what is refused."""

import json

import pytest

from metazoo.cli import main
from metazoo.config_files import load_config
from metazoo.engine.offset_eval import RESULTS, evaluate_offset
from metazoo.engine.run import load_run, task_source
from metazoo.errors import ConfigError
from tests.test_cli import _one_line_error

STREAM = ["data.name=synthetic", "model.name=mlp", "model.widths=[]", "algorithm.name=mann",
          "algorithm.presentation=offset_labels", "algorithm.hidden=16",
          "algorithm.memory_slots=8", "algorithm.memory_size=6", "algorithm.read_heads=2",
          "data.ways=3", "data.shots=4", "data.queries=0", "data.order=shuffled", "eval.ways=3",
          "eval.queries=2", "eval.episodes=6", "eval.every=0", "train.meta_steps=3",
          "train.meta_batch_size=2", "train.progress=false", "train.tensorboard=false",
          "data.image_size=8"]


def test_offset_labels_from_training_to_the_table_and_the_figure(capsys, tmp_path,
                                                                synthetic_data):
    run = tmp_path / "mann"
    assert main(["train", "--out", str(run), "--set", *STREAM]) == 0
    assert main(["eval", str(run), "--protocol", "offset_labels", "--episodes", "9",
                 "--presentations", "5"]) == 0
    out = capsys.readouterr().out
    assert "accuracy by presentation (9 episodes of 3 classes x 5 presentations" in out
    written = json.loads((run / RESULTS).read_text())
    assert [r["presentation"] for r in written["by_presentation"]] == [1, 2, 3, 4, 5]
    assert written["episodes"] == 9 and written["algorithm"] == "mann"
    assert main(["plot", str(run)]) == 0
    assert (run / "presentations.png").stat().st_size > 0


def test_streams_are_fixed_and_shuffled(tmp_path, synthetic_data):
    from dataclasses import replace

    run = tmp_path / "lstm"
    cfg = load_config(overrides=[o for o in STREAM if not o.startswith("algorithm.")] + [
        "algorithm.name=lstm_learner", "algorithm.presentation=offset_labels",
        "algorithm.hidden=8"])
    from metazoo.engine.train import train

    train(cfg, run)
    cfg, alg = load_run(run)
    ev = replace(cfg.eval, shots=4, queries=0)
    source = task_source(replace(cfg, eval=ev), "test", training=False)
    assert source.order == "shuffled"
    a = evaluate_offset(alg, source, episodes=5)
    b = evaluate_offset(alg, source, episodes=5, batch_size=2)
    assert a.accuracy == b.accuracy and len(a.accuracy) == 4


def test_what_the_offset_protocol_refuses(capsys, tmp_path, synthetic_data):
    run = tmp_path / "proto"
    fast = ["data.name=synthetic", "model.hidden=8", "train.progress=false",
            "train.meta_steps=2", "train.tensorboard=false", "eval.every=0",
            "eval.episodes=4", "eval.queries=3", "data.queries=3"]
    assert main(["train", "--out", str(run), "--set", *fast]) == 0
    _one_line_error(capsys, ["eval", str(run), "--protocol", "offset_labels"],
                    "needs a sequence learner")
    _one_line_error(capsys, ["eval", str(run), "--protocol", "offset_labels", "--shots", "2"],
                    "--shots does not apply")
    _one_line_error(capsys, ["eval", str(run), "--presentations", "3"],
                    "--presentations belongs to --protocol offset_labels")
    _one_line_error(capsys, ["eval", str(run), "--protocol", "offset_labels",
                             "--presentations", "0"], "--presentations must be >= 1")
    _one_line_error(capsys, ["train", "--out", str(tmp_path / "x"), "--set", *STREAM,
                             "data.order=class_major"], "set data.order=shuffled")
    _one_line_error(capsys, ["train", "--out", str(tmp_path / "y"), "--set", *fast,
                             "data.queries=0"], "data.queries must be >= 1")
    with pytest.raises(ConfigError, match="shuffled"):
        load_config(overrides=[*STREAM, "data.order=class_major"]).validate()


def test_an_offset_label_run_validates_on_streams_by_binding(tmp_path, synthetic_data):
    """The validation score of a stream run is the accuracy of the 2nd and later presentations
    on fixed validation streams of `data.shots` presentations, not the N-way K-shot query score."""
    from metazoo.engine.log import read
    from metazoo.engine.offset_eval import presentation_table, stream_source, validate_stream

    run = tmp_path / "mann"
    assert main(["train", "--out", str(run), "--set", *STREAM, "eval.every=3",
                 "eval.val_episodes=5"]) == 0
    val = [r for r in read(run / "metrics.csv") if r["split"] == "val"]
    cfg, alg = load_run(run)  # the best weights: those the only validation scored
    source = stream_source(cfg, "val")
    assert (source.shots, source.queries, source.order) == (4, 0, "shuffled")
    table = presentation_table(alg, source, episodes=5)
    assert table.shape == (5, 4)
    expected = float(table[:, 1:].mean(1).mean())
    assert float(val[0]["acc"]) == pytest.approx(expected, abs=1e-6)
    assert validate_stream(alg, source, episodes=5).mean == pytest.approx(expected, abs=1e-6)
