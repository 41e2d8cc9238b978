"""Adding a method from outside the package, as a new user would: the traps are closed.

Options are checked against the ``__init__`` annotations (with a "did you mean"); a plugin that
raises on import is one clear line; a broken installed entry point fails only the suites that
use its method; a method returning the wrong shape is told what was expected; and every record
holds a fingerprint of its method's code, so that changed code reruns the run instead of its
stale numbers being reused.
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from namex_bench import ExpertSpec, MoELayer
from namex_bench.cli import main
from namex_bench.methods import registry
from namex_bench.methods.base import MergeOutput
from namex_bench.methods.fingerprint import method_fingerprint
from namex_bench.methods.options import MethodOptionError, check_options
from namex_bench.methods.registry import get_method
from namex_bench.runner.records import read_records

PLUGIN = '''\
"""A plugin: SMEAR with sharpened scores."""
import torch

from namex_bench import MergingMethod, register_method
from namex_bench.methods import MergeInputs, MergeOutput
from namex_bench.moe.experts import weighted_sum


@register_method("{name}")
class SharpSMEAR(MergingMethod):
    """SMEAR with sharpened scores."""

    fixed_top_k_is_n = True

    def __init__(self, spec, num_experts, temperature: float = 0.5, learn_temperature: bool = False):
        super().__init__(spec, num_experts)
        self.temperature = temperature

    def forward(self, inputs: MergeInputs) -> MergeOutput:
        weights = torch.softmax(inputs.scores.clamp_min(1e-9).log() / self.temperature, dim=-1)
        return MergeOutput(self.apply_merged(inputs.tokens, weighted_sum(weights, inputs.bank.params())), inputs.state.advanced())
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """Write a plugin module ``name`` (source ``text``) importable from ``tmp_path``; forgotten afterwards."""
    written = []
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.available_methods()
    methods = dict(registry._METHODS)

    def write(name: str, text: str) -> Path:
        path = tmp_path / f"{name}.py"
        path.write_text(text)
        importlib.invalidate_caches()
        sys.modules.pop(name, None)
        written.append(name)
        return path

    yield write
    for name in written:
        sys.modules.pop(name, None)
    registry._METHODS.clear()
    registry._METHODS.update(methods)


def suite_file(tmp_path: Path, plugins: list[str], method: str, options: str = "{}") -> Path:
    path = tmp_path / "ext.yaml"
    path.write_text(f"""\
name: ext
seeds: [0]
device: cpu
plugins: [{", ".join(plugins)}]
methods:
  - name: {method}
    options: {options}
models:
  - name: vit_tiny
    builder: vit_moe
    params: {{patch_size: 14, embed_dim: 16, depth: 3, num_heads: 2, mlp_ratio: 2.0, moe_blocks: every, num_experts: 2}}
tasks:
  - name: mnist
    type: image_classification
    data: {{source: mnist5k}}
    train: {{epochs: 1, batch_size: 16, lr: 1.0e-3}}
""")
    return path


def one_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------------------- options


@pytest.mark.parametrize("options,fragments", [
    ("{learn_temperature: 'no'}", ["methods[0].options", "option 'learn_temperature'", "is a bool, got 'no'"]),
    ("{temperature: '0.5'}", ["option 'temperature'", "is a float, got '0.5'"]),
    ("{temperatur: 0.5}", ["has no option 'temperatur'", "did you mean 'temperature'?"]),
])
def test_plugin_options_are_checked_against_their_annotations(options, fragments, plugin, tmp_path, capsys):
    plugin("ext_sharp", PLUGIN.format(name="ext_sharp"))
    line = one_error(["validate", str(suite_file(tmp_path, ["ext_sharp"], "ext_sharp", options))], capsys)
    for fragment in fragments:
        assert fragment in line, (fragment, line)


def test_builtin_options_are_checked_too():
    check_options(get_method("namex_mom"), {"momentum_radius": 0.5, "gamma": 1})  # an int is a float
    with pytest.raises(MethodOptionError, match="'momentum_radius' of method 'namex_mom' is a float, got '0.5'"):
        check_options(get_method("namex_mom"), {"momentum_radius": "0.5"})
    with pytest.raises(MethodOptionError, match="'nbs_iters' .* is a int, got 2.5"):
        check_options(get_method("namex"), {"nbs_iters": 2.5})
    with pytest.raises(MethodOptionError, match="did you mean 'momentum_angle'"):
        check_options(get_method("namex_mom"), {"momentum_angel": 0.5})


# ---------------------------------------------------------------------------- plugins


def test_a_plugin_that_raises_on_import_is_one_clear_line(plugin, tmp_path, capsys):
    plugin("ext_raises", "raise RuntimeError('this plugin is broken')\n")
    line = one_error(["validate", str(suite_file(tmp_path, ["ext_raises"], "smear"))], capsys)
    assert f"{tmp_path / 'ext.yaml'}: plugins[0]: plugin module 'ext_raises' raised RuntimeError while imported: this plugin is broken" in line


def test_a_missing_plugin_says_plugins_must_be_importable(tmp_path, capsys):
    line = one_error(["validate", str(suite_file(tmp_path, ["ext_nowhere_to_be_found"], "smear"))], capsys)
    assert "plugins[0]" in line and "must be importable" in line


def test_list_methods_loads_plugins(plugin, capsys):
    plugin("ext_listed", PLUGIN.format(name="ext_listed"))
    assert main(["list", "methods", "--plugins", "ext_listed"]) == 0
    assert "ext_listed" in capsys.readouterr().out
    assert "could not be imported" in one_error(["list", "methods", "--plugins", "ext_not_there"], capsys)


@pytest.fixture
def broken_entry_point(tmp_path, monkeypatch, plugin):
    """An installed distribution whose entry point ``broken_merge`` raises on import, beside a good one."""
    plugin("ext_broken_ep", "raise ValueError('missing weights file')\n")
    plugin("ext_good_ep", "from namex_bench.methods.smear import SMEAR\n\n\nclass Good(SMEAR):\n    '''A good plugin.'''\n")
    dist = tmp_path / "ext_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ext-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[namex_bench.methods]\nbroken_merge = ext_broken_ep:X\ngood_merge = ext_good_ep:Good\n")
    loaded, broken = dict(registry._loaded), dict(registry._BROKEN)
    registry._loaded["entry_points"] = False
    yield
    registry._loaded.update(loaded)
    registry._BROKEN.clear()
    registry._BROKEN.update(broken)


def test_a_broken_entry_point_fails_only_the_suites_that_use_it(broken_entry_point, tmp_path, capsys):
    assert main(["list", "methods"]) == 0
    captured = capsys.readouterr()
    assert "good_merge" in captured.out and "smear" in captured.out
    assert "entry point 'broken_merge' (ext_broken_ep:X, from ext-broken 0.1) failed to load: ValueError: missing weights file" in captured.err
    assert main(["validate", str(suite_file(tmp_path, [], "good_merge"))]) == 0
    capsys.readouterr()
    line = one_error(["validate", str(suite_file(tmp_path, [], "broken_merge"))], capsys)
    assert "methods[0].name: merging method 'broken_merge' is not available: entry point 'broken_merge'" in line
    assert "missing weights file" in line
    assert "entry points that failed to load: broken_merge" in one_error(["validate", str(suite_file(tmp_path, [], "smeer"))], capsys)


# ---------------------------------------------------------------------------- the layer


def test_a_method_returning_the_wrong_shape_is_told_what_was_expected():
    from namex_bench.methods.smear import SMEAR

    class Transposed(SMEAR):
        """Returns [G, d, L] (a test method)."""

        def forward(self, inputs):
            out = super().forward(inputs)
            return MergeOutput(out.output.transpose(1, 2), out.state)

    class Bare(SMEAR):
        """Returns a tensor (a test method)."""

        def forward(self, inputs):
            return super().forward(inputs).output

    x = torch.randn(2, 5, 8)
    with pytest.raises(ValueError, match=r"returned output of shape \(2, 8, 5\); expected \(2, 5, 8\): MergeInputs.tokens"):
        MoELayer(ExpertSpec(8, 16), 4, Transposed)(x)
    with pytest.raises(TypeError, match="returned Tensor; expected MergeOutput"):
        MoELayer(ExpertSpec(8, 16), 4, Bare)(x)


# ---------------------------------------------------------------------------- code fingerprints


def test_the_fingerprint_covers_the_modules_up_the_mro():
    fingerprint = method_fingerprint(get_method("namex_mom"))
    assert fingerprint["class"] == "namex_bench.methods.namex_mom.NAMExMom"
    assert set(fingerprint["modules"]) == {f"namex_bench.methods.{m}" for m in ("base", "camex", "ep_camex", "namex", "namex_mom")}
    assert all(len(h) == 16 for h in fingerprint["modules"].values())
    assert method_fingerprint(get_method("namex_mom")) == fingerprint
    assert method_fingerprint(get_method("smear"))["digest"] != fingerprint["digest"]


def test_a_changed_method_reruns_its_runs_and_a_changed_docstring_does_not(plugin, tmp_path, capsys):
    results = tmp_path / "results"
    source = PLUGIN.format(name="ext_evolving")
    plugin("ext_evolving", source)
    path = suite_file(tmp_path, ["ext_evolving"], "ext_evolving")
    run = ["run", str(path), "--limit", "32", "--results", str(results), "--no-report"]
    assert main(run) == 0
    [first] = read_records(results, "ext-limit32")
    code = first["code"]["method"]
    assert code["class"] == "ext_evolving.SharpSMEAR" and "ext_evolving" in code["modules"]
    assert "namex_bench.methods.base" in code["modules"]

    # a docstring and a comment change nothing: the run is not redone
    plugin("ext_evolving", source.replace('"""SMEAR with sharpened scores."""', '"""SMEAR, sharper."""  # reworded'))
    capsys.readouterr()
    assert main(run) == 0
    assert "0 runs finished, 1 already done" in capsys.readouterr().out

    # changed code: the run is done again, the old record kept aside
    plugin("ext_evolving", source.replace("/ self.temperature", "/ (2 * self.temperature)"))
    assert main(run) == 0
    out = capsys.readouterr().out
    assert "the code of method 'ext_evolving' changed since its record was written; running it again" in out
    assert "1 runs finished, 0 already done" in out
    [second] = read_records(results, "ext-limit32")
    assert second["key"] == first["key"] and second["code"]["method"]["digest"] != code["digest"]
    old = results / "ext-limit32" / "runs" / "superseded" / f"{first['key']}.code-{code['digest']}.json"
    assert json.loads(old.read_text())["code"] == first["code"]


def test_a_record_without_a_fingerprint_is_rerun(tmp_path, capsys):
    results = tmp_path / "results"
    path = suite_file(tmp_path, [], "smear")
    run = ["run", str(path), "--limit", "32", "--results", str(results), "--no-report"]
    assert main(run) == 0
    [record] = read_records(results, "ext-limit32")
    file = results / "ext-limit32" / "runs" / f"{record['key']}.json"
    del record["code"]
    file.write_text(json.dumps(record))
    capsys.readouterr()
    assert main(run) == 0
    assert "1 runs finished, 0 already done" in capsys.readouterr().out
    assert (results / "ext-limit32" / "runs" / "superseded" / f"{record['key']}.code-unknown.json").is_file()


def test_readme_points_to_the_contract():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Add a merging method", 1)[1].split("\n## ", 1)[0]
    for fragment in ("MergeInputs", "pooling", "stats", "importable", "ablations", "reduces_to", "annotations"):
        assert fragment in section, fragment
    assert textwrap.dedent(section)
