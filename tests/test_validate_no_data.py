"""``validate SUITE --no-data``: everything but the data is checked, and what the data needs is listed."""

from __future__ import annotations

from namex_bench.cli import main

IMAGENET_VARIABLES = ("IMAGENET_ROOT", "IMAGENET_C_ROOT", "IMAGENET_A_ROOT", "IMAGENET_R_ROOT", "VIT_PRETRAINED")


def test_validate_without_the_data_lists_the_variables_and_paths_a_suite_needs(monkeypatch, tmp_path, capsys):
    for name in IMAGENET_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert main(["validate", "imagenet"]) == 2  # without --no-data an unset variable is an error
    assert "environment variable IMAGENET_ROOT is not set" in capsys.readouterr().err

    monkeypatch.setenv("IMAGENET_A_ROOT", str(tmp_path))
    assert main(["validate", "imagenet", "--no-data"]) == 0
    out = capsys.readouterr().out
    assert "imagenet.yaml: OK (data not checked) — 7 methods × 1 task/model pairs (1 tasks, 1 models) × 3 seeds = 21 runs" in out
    assert "IMAGENET_ROOT (unset — required) — tasks[0].data.root" in out
    assert f"IMAGENET_A_ROOT (set: {tmp_path}) — tasks[0].eval.imagenet_a" in out
    assert "VIT_PRETRAINED (unset, default 'true') — models[0].params.pretrained" in out
    assert "tasks[0].data.root: ${IMAGENET_ROOT} (missing)" in out
    assert f"tasks[0].eval.imagenet_a: {tmp_path} (exists)" in out


def test_no_data_still_checks_everything_else(tmp_path, capsys):
    suite = tmp_path / "bad.yaml"
    suite.write_text(
        "name: bad\nseeds: [0]\nmethods: [{name: namex, options: {nope: 1}}]\n"
        "models: [{name: v, builder: vit_moe, params: {checkpoint: /nowhere/vit.pth}}]\n"
        "tasks: [{name: t, type: image_classification, data: {source: imagefolder, root: /nowhere}}]\n"
    )
    assert main(["validate", str(suite), "--no-data"]) == 2
    assert "methods[0].options: method 'namex' has no option" in capsys.readouterr().err
    suite.write_text(suite.read_text().replace("options: {nope: 1}", "options: {}"))
    assert main(["validate", str(suite), "--no-data"]) == 0
    out = capsys.readouterr().out
    assert "models[0].params.checkpoint: /nowhere/vit.pth (missing)" in out and "tasks[0].data.root: /nowhere (missing)" in out
    assert main(["validate", str(suite)]) == 2
    assert "does not exist" in capsys.readouterr().err
