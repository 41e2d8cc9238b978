"""Suite validation: every bad field is one clear line naming the file, the field and its line.

``namex-bench validate`` must refuse a malformed suite with exit status 2 and a single
line ``namex-bench: error: <file>: <field>: <message> (line N)`` on stderr — never a
traceback — and must load YAML safely (no Python tags, nothing executed).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from namex_bench.cli import main
from namex_bench.methods.registry import available_methods

REPO = Path(__file__).resolve().parents[1]

# A valid suite in block style, so that every field of interest has a line of its own.
TINY = """\
name: tiny
description: a tiny suite for the validation tests
seeds: [0, 1]
device: cpu
reference: smear
methods:
  - name: smear
  - name: namex_mom
models:
  - name: vit_tiny
    builder: vit_moe
    params:
      patch_size: 14
      embed_dim: 16
      depth: 3
      num_heads: 2
      mlp_ratio: 2.0
      moe_blocks: every
      num_experts: 2
tasks:
  - name: mnist
    type: image_classification
    data: {source: mnist5k}
    train:
      epochs: 1
      batch_size: 16
      lr: 1.0e-3
"""


def edit(old: str, new: str) -> str:
    assert TINY.count(old) == 1, old
    return TINY.replace(old, new)


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the only line of ``text`` containing ``needle``."""
    lines = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(lines) == 1, (needle, lines)
    return lines[0]


def validate(path: Path | str, capsys) -> tuple[int, str, str]:
    code = main(["validate", str(path)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_clean_error(code: int, err: str, file: str) -> str:
    """Exit status 2 and one line ``namex-bench: error: <file>: ...`` on stderr; returns the line."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"namex-bench: error: {file}:"), lines[0]
    return lines[0]


def test_the_tiny_suite_is_valid(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    code, out, err = validate(path, capsys)
    assert code == 0, err
    assert "OK" in out and "2 methods × 1 task/model pairs (1 tasks, 1 models) × 2 seeds = 4 runs" in out


def _imagefolder(tmp_path: Path) -> str:
    (tmp_path / "images" / "train").mkdir(parents=True)  # the test folder ("val") is missing
    return edit("data: {source: mnist5k}", f"data: {{source: imagefolder, root: {tmp_path / 'images'}}}")


# id -> (suite text (or a function of tmp_path), field named, other fragments, the line's marker or None)
CASES = {
    "invalid YAML (bad indentation)": (
        edit("  - name: namex_mom", "    - name: namex_mom"), None, ["invalid YAML"], "    - name: namex_mom"),
    "misspelt field": (
        edit("epochs: 1", "epoch: 1"), "tasks[0].train.epoch", ["unknown field", "did you mean 'epochs'"], "epoch: 1"),
    "misspelt top-level field": (
        edit("seeds: [0, 1]", "seed: [0, 1]"), "seed", ["did you mean 'seeds'"], "seed: [0, 1]"),
    "wrong type": (
        edit("batch_size: 16", "batch_size: many"), "tasks[0].train.batch_size", ["integer"], "batch_size: many"),
    "negative epochs": (
        edit("epochs: 1", "epochs: -1"), "tasks[0].train.epochs", ["greater than or equal to 0"], "epochs: -1"),
    "unknown method": (
        edit("  - name: namex_mom", "  - name: namex_mon"), "methods[1].name",
        ["unknown merging method 'namex_mon'", "known methods:", *available_methods()], "name: namex_mon"),
    "bad method option name": (
        edit("  - name: namex_mom", "  - name: ep_camex\n    options: {gama: 1}"), "methods[1].options",
        ["method 'ep_camex' has no option 'gama'", "did you mean 'gamma'"], "options: {gama: 1}"),
    "bad method option value": (
        edit("  - name: namex_mom", "  - name: namex_mom\n    options: {momentum_radius: 5}"), "methods[1].options",
        ["momentum_radius"], "options: {momentum_radius: 5}"),
    "unknown model builder": (
        edit("builder: vit_moe", "builder: vit_moo"), "models[0].builder", ["unknown model builder 'vit_moo'", "vit_moe"],
        "builder: vit_moo"),
    "bad model param value": (
        edit("depth: 3", "depth: zero"), "models[0].params.depth", ["integer"], "depth: zero"),
    "unknown model param": (
        edit("depth: 3", "depht: 3"), "models[0].params.depht", ["unknown field"], "depht: 3"),
    "missing required field": (
        edit("methods:\n  - name: smear\n  - name: namex_mom\n", "").replace("reference: smear\n", ""), "methods",
        ["required field is missing"], None),
    "duplicate method names": (
        edit("  - name: namex_mom", "  - name: smear"), "methods", ["unique", "smear"], None),
    "reference not among the methods": (
        edit("reference: smear", "reference: camex"), "reference", ["'camex'", "not one of the suite's methods"],
        "reference: camex"),
    "imagefolder with a missing directory": (
        _imagefolder, "tasks[0].data", ["does not exist", "val"], "data: {source: imagefolder"),
    "plugin module that does not exist": (
        edit("reference: smear", "reference: smear\nplugins: [namex_bench_tests_no_such_plugin]"), "plugins[0]",
        ["namex_bench_tests_no_such_plugin"], "plugins:"),
    "bad device": (
        edit("device: cpu", "device: tpu"), "device", ["invalid device 'tpu'"], "device: tpu"),
    "duplicate seeds": (
        edit("seeds: [0, 1]", "seeds: [0, 0]"), "seeds", ["distinct"], "seeds: [0, 0]"),
    "unknown task type": (
        edit("type: image_classification", "type: image_classifier"), "tasks[0]", ["image_classifier"], None),
    "a list instead of a mapping": (
        "- name: tiny\n- seeds: [0]\n", None, ["a suite file is a YAML mapping"], None),
    "an empty file": (
        "", None, ["a suite file is a YAML mapping"], None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_suite_is_one_clean_error(case, tmp_path, capsys):
    text, field, fragments, marker = CASES[case]
    text = text(tmp_path) if callable(text) else text
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    line = assert_one_clean_error(*validate(path, capsys)[::2], file=str(path))
    rest = line.removeprefix(f"namex-bench: error: {path}: ")
    if field is not None:
        assert rest.startswith(f"{field}: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    if marker is not None:
        assert line.endswith(f"(line {line_of(text, marker)})"), line


def test_line_numbers_point_at_the_bad_line_in_nested_blocks(tmp_path, capsys):
    """Inside ``tasks:`` (a tagged union) the line is that of the field, not of the task."""
    for old, new, field in [
        ("epochs: 1", "epoch: 1", "tasks[0].train.epoch"),
        ("lr: 1.0e-3", "lr: -1.0", "tasks[0].train.lr"),
        ("batch_size: 16", "batch_size: 0", "tasks[0].train.batch_size"),
        ("num_experts: 2", "num_experts: 0", "models[0].params.num_experts"),
        ("  - name: namex_mom", "  - name: nope", "methods[1].name"),
    ]:
        text = edit(old, new)
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        line = assert_one_clean_error(*validate(path, capsys)[::2], file=str(path))
        assert f": {field}: " in line and line.endswith(f"(line {line_of(text, new.strip())})"), line


def test_unknown_suite_name_is_one_clean_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    line = assert_one_clean_error(*validate("no_such_suite_xyz", capsys)[::2], file="no_such_suite_xyz")
    assert "no suite of that name" in line and "quickstart" in line  # the known suites are listed


def test_missing_suite_file_is_one_clean_error(tmp_path, capsys):
    path = tmp_path / "missing.yaml"
    line = assert_one_clean_error(*validate(path, capsys)[::2], file=str(path))
    assert "no such suite file" in line


def test_python_tags_are_rejected_and_nothing_runs(tmp_path, capsys):
    """The safe loader refuses ``!!python/...`` tags: the command inside is never executed."""
    marker = tmp_path / "hacked"
    for text in (
        f'!!python/object/apply:os.system ["touch {marker}"]\n',
        edit("description: a tiny suite for the validation tests", f'description: !!python/object/apply:os.system ["touch {marker}"]'),
        edit("  - name: namex_mom", f'  - name: !!python/object/apply:os.system ["touch {marker}"]'),
    ):
        path = tmp_path / "evil.yaml"
        path.write_text(text)
        line = assert_one_clean_error(*validate(path, capsys)[::2], file=str(path))
        assert "invalid YAML" in line and "python/object/apply:os.system" in line
        assert not marker.exists()


def test_quickstart_suite_is_valid(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    spec = yaml.safe_load((REPO / "suites" / "quickstart.yaml").read_text())
    trained = [t for t in spec["tasks"] if t["type"] != "compression"]
    pairs = sum(len(task.get("models") or spec["models"]) for task in trained)  # each task runs on its models
    runs = len(spec["methods"]) * pairs * len(spec["seeds"])
    for task in spec["tasks"]:
        if task["type"] == "compression":  # the uncompressed model, then every compressor at every budget
            variants = 1 + len(task["compressors"]) * len(task.get("experts") or task.get("removed"))
            runs += variants * len(task.get("models") or spec["models"]) * len(spec["seeds"])
    for name in ("suites/quickstart.yaml", "quickstart"):
        code, out, err = validate(name, capsys)
        assert code == 0, err
        assert "OK" in out and f"= {runs} runs;" in out, out
