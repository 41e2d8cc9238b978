"""Reference presets: a method as its authors' code runs it, named in a suite entry.

``- {name: camex, preset: reference}`` takes the preset's options, ``options:`` override
them, and the resolved options go into the run config (so run keys stay content
addresses: the same options, given by a preset or written out, are the same run).
"""

from __future__ import annotations

import torch

from namex_bench import ExpertSpec, MoELayer, get_method
from namex_bench.cli import main
from namex_bench.methods.registry import available_methods
from namex_bench.suite.expand import expand
from namex_bench.suite.loader import load_suite
from namex_bench.suite.schema import MethodEntry, ModelEntry
from namex_bench.tasks.training import seeded_model

WRITTEN_OUT = """\
  - name: camex
    label: camex@reference
    options: {curvature_rank: 8, curvature_init: camex, mask: ties, expert_dropout: 0.0, topk_fallback: true, router: per_matrix, routing_padding: include}
"""

SUITE = """\
name: presets
seeds: [0]
device: cpu
methods:
  - {name: camex, preset: reference}
  - name: camex
    label: camex_r4
    preset: reference
    options: {curvature_rank: 4}
  - {name: smear, preset: reference}
models:
  - name: vit_tiny
    builder: vit_moe
    params: {patch_size: 14, embed_dim: 16, depth: 3, num_heads: 2, mlp_ratio: 2.0, moe_blocks: every, num_experts: 4}
tasks:
  - name: mnist
    type: image_classification
    data: {source: mnist5k}
    train: {epochs: 1, batch_size: 16}
"""


def test_reference_presets_are_valid_options_of_their_methods():
    with_reference = {name for name, cls in available_methods().items() if "reference" in cls.presets}
    assert with_reference == {"camex", "ep_camex", "namex", "namex_mom", "smear"}
    for name in with_reference:
        cls = get_method(name)
        options = cls.preset_options("reference")
        assert set(options) <= set(cls.option_defaults()), name
        assert cls.presets["reference"].description
        MoELayer(ExpertSpec(8, 16), 4, name, options)  # constructs: every value is valid
    camex = get_method("camex").preset_options("reference")
    assert camex == {
        "curvature_rank": 8, "curvature_init": "camex", "mask": "ties", "expert_dropout": 0.0,
        "topk_fallback": True, "router": "per_matrix", "routing_padding": "include",
    }
    assert get_method("namex_mom").preset_options("reference") == {**camex, "propagation": "paper"}
    assert get_method("smear").preset_options("reference") == {"router_norm": "layernorm", "routing_padding": "include"}
    assert get_method("smoe").presets == {} and get_method("topk_merge").presets == {}


def runs_of(path, text: str) -> dict:
    path.write_text(text)
    suite, _ = load_suite(str(path))
    return {run.name.split("/")[0]: run for run in expand(suite)}


def test_a_suite_entry_names_a_preset_and_its_options_override_it(tmp_path):
    runs = runs_of(tmp_path / "presets.yaml", SUITE)
    assert set(runs) == {"camex@reference", "camex_r4", "smear@reference"}
    defaults = get_method("camex").option_defaults()
    reference = runs["camex@reference"].config["method"]
    assert reference["preset"] == "reference"
    assert reference["options"] == {**defaults, **get_method("camex").preset_options("reference")}
    assert runs["camex_r4"].config["method"]["options"]["curvature_rank"] == 4
    assert runs["camex_r4"].config["method"]["options"]["router"] == "per_matrix"
    assert runs["camex_r4"].key != runs["camex@reference"].key
    # a content address: the preset's options written out (same label) are the same run
    methods = SUITE[SUITE.index("methods:\n") : SUITE.index("models:")]
    written = runs_of(tmp_path / "written.yaml", SUITE.replace(methods, "methods:\n" + WRITTEN_OUT))
    assert written["camex@reference"].config["method"]["preset"] is None
    assert written["camex@reference"].key == runs["camex@reference"].key


def test_an_unknown_preset_is_one_clean_error(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(SUITE.replace("{name: smear, preset: reference}", "{name: smear, preset: authors}"))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"namex-bench: error: {path}: methods[2].preset: ")
    line = 1 + SUITE[: SUITE.index("{name: smear, preset")].count("\n")
    assert "no preset 'authors'" in err and "reference" in err and err.endswith(f"(line {line})")


def test_the_run_builds_the_model_with_the_preset(tmp_path):
    model = ModelEntry(name="vit", builder="vit_moe", params={"patch_size": 14, "embed_dim": 16, "depth": 2, "num_heads": 2, "moe_blocks": "every", "num_experts": 4})
    built = seeded_model(model, MethodEntry(name="camex", preset="reference", options={"curvature_rank": 2}), 0, torch.device("cpu"), 10, 1, 28)
    for layer in built.moe_layers:
        assert layer.hidden_router is not None and layer.routing_padding == "include"
        assert layer.method.curvature.rank == 2 and layer.method.mask == "ties" and layer.method.topk_fallback
    plain = seeded_model(model, MethodEntry(name="camex"), 0, torch.device("cpu"), 10, 1, 28)
    assert all(layer.hidden_router is None for layer in plain.moe_layers)


def test_list_methods_verbose_shows_presets_and_options(capsys):
    assert main(["list", "methods", "-v"]) == 0
    out = capsys.readouterr().out
    assert "| presets " in out.splitlines()[0]
    for name, cls in available_methods().items():
        block = out.split(f"\n{name}\n{'-' * len(name)}\n", 1)[1]
        defaults = block.split("options (defaults): ", 1)[1].splitlines()[0]
        for option, value in cls.option_defaults().items():
            assert f"{option}={value!r}" in defaults, (name, option)
        for preset, spec in cls.presets.items():
            assert f"preset {preset!r}: " in block and spec.description in block
    assert "kpup1710/CAMEx @ 11ba81d" in out and "r-three/smear @ 6e44c82" in out
    assert "Routing options (every method)" in out
