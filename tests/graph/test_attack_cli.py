import json

import pytest

from metazoo.cli import main
from metazoo.graph.config import attack_config_from_dict, attack_preset_names, load_attack_config


def _one_line_error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("metazoo: error:"), err
    assert match in err, err


@pytest.mark.parametrize(("extra", "match"), [
    (["--preset", "metattack-csmb"], "did you mean 'metattack-csbm'"),
    (["--set", "attack.budget=2"], "attack.budget must be in (0, 1]"),
    (["--set", "attack.variants=[meta_slef]"], "must be one of meta_self"),
    (["--set", "atack.budget=0.1"], "did you mean 'attack'"),
    (["--set", "attack.budgte=0.1"], "did you mean 'budget'"),
    (["--set", "data.name=cora", "data.root=/nonexistent"], "no ind.cora.x in"),
])
def test_bad_presets_and_options_are_one_line_errors(capsys, tmp_path, extra, match):
    _one_line_error(capsys, ["attack", *extra, "--out", str(tmp_path)], match)


@pytest.mark.parametrize("name", attack_preset_names())
def test_every_attack_preset_loads_and_round_trips(name):
    cfg = load_attack_config(name)
    assert attack_config_from_dict(cfg.to_dict()) == cfg
    assert cfg.attack.budget == 0.05 and cfg.attack.train_iters == 100


def test_attack_command_writes_results_and_refuses_to_overwrite(capsys, tmp_path):
    pytest.importorskip("networkx")
    argv = ["attack", "--preset", "metattack-karate", "--out", str(tmp_path), "--set",
            "attack.train_iters=5", "eval.retrainings=2", "eval.epochs=20"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "karate: 34 nodes, 78 edges" in out and "meta_self" in out and "a_meta_self" in out
    res = json.loads((tmp_path / "results.json").read_text())
    assert set(res["results"]) == {"clean", "random", "meta_self", "a_meta_self"}
    assert res["budget"] == 3 and all(len(r["rates"]) == 2 for r in res["results"].values())
    assert len(res["results"]["meta_self"]["flips"]) == 3
    _one_line_error(capsys, argv, "already holds results.json")
