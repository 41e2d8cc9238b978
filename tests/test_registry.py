"""The registry of merging methods: built-ins, registration, entry points and plugin modules."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest
import torch

import namex_bench
from namex_bench import ExpertSpec, MergingMethod, MoELayer, get_method, register_method
from namex_bench.methods import load_plugins, registry
from namex_bench.methods.base import MergeOutput
from namex_bench.methods.smear import SMEAR

BUILTIN = {"smoe", "smear", "topk_merge", "camex", "ep_camex", "namex", "namex_mom"}
SPEC = ExpertSpec(8, 16)


def test_builtin_methods_are_registered_with_descriptions():
    methods = namex_bench.available_methods()
    assert BUILTIN <= set(methods)
    assert list(methods) == sorted(methods)
    for name in BUILTIN:
        cls = methods[name]
        assert issubclass(cls, MergingMethod)
        assert cls.name == name
        assert get_method(name) is cls
        desc = cls.description()
        assert isinstance(desc, str) and desc.strip() and "\n" not in desc, name


def test_builtin_method_declarations():
    methods = namex_bench.available_methods()
    assert methods["smoe"].pooling_units == ("token",)
    for name in BUILTIN - {"smoe"}:
        assert "token" not in methods[name].pooling_units, name
        assert {"sequence", "segment", "image"} <= set(methods[name].pooling_units), name


def test_unknown_method_lists_known_names():
    with pytest.raises(KeyError) as info:
        get_method("nope")
    message = str(info.value)
    assert "nope" in message
    for name in BUILTIN:
        assert name in message
    with pytest.raises(KeyError, match="nope"):
        MoELayer(SPEC, 4, "nope")


def test_registered_subclass_is_usable_in_a_layer(clean_registry):
    @register_method("test_scale_smear")
    class ScaleSMEAR(SMEAR):
        """SMEAR, with its output halved (a test method)."""

        def forward(self, inputs):
            out = super().forward(inputs)
            return MergeOutput(0.5 * out.output, out.state, out.stats)

    assert "test_scale_smear" in namex_bench.available_methods()
    assert get_method("test_scale_smear") is ScaleSMEAR
    assert ScaleSMEAR.description() == "SMEAR, with its output halved (a test method)."

    torch.manual_seed(0)
    layer = MoELayer(SPEC, 4, "test_scale_smear")
    smear = MoELayer(SPEC, 4, "smear")
    smear.load_state_dict(layer.state_dict())
    assert layer.method_name == "test_scale_smear"
    x = torch.randn(2, 5, 8)
    assert torch.allclose(layer(x).y, 0.5 * smear(x).y, atol=1e-6)
    # a method class can be given directly too
    direct = MoELayer(SPEC, 4, ScaleSMEAR)
    direct.load_state_dict(layer.state_dict())
    assert direct.method_name == "test_scale_smear"
    assert torch.equal(direct(x).y, layer(x).y)


def test_reregistering_the_same_class_is_allowed(clean_registry):
    cls = get_method("smear")
    assert register_method("smear")(cls) is cls
    assert get_method("smear") is cls


def test_register_non_method_raises_type_error(clean_registry):
    with pytest.raises(TypeError, match="MergingMethod"):
        register_method("not_a_method")(int)
    with pytest.raises(TypeError, match="MergingMethod"):

        @register_method("not_a_method_either")
        def f():  # pragma: no cover - never called
            pass

    with pytest.raises(TypeError):
        register_method("torch_module")(torch.nn.Linear)
    assert "not_a_method" not in registry._METHODS
    assert "torch_module" not in registry._METHODS


def test_register_other_class_under_existing_name_raises_value_error(clean_registry):
    original = get_method("smear")

    class Impostor(SMEAR):
        """Another SMEAR."""

    with pytest.raises(ValueError, match="already registered"):
        register_method("smear")(Impostor)
    assert get_method("smear") is original


def test_register_invalid_name_raises_value_error(clean_registry):
    class Fine(SMEAR):
        """A method with a bad name."""

    for bad in ("", "has space", "dot.ted"):
        with pytest.raises(ValueError):
            register_method(bad)(Fine)


PLUGIN_SOURCE = textwrap.dedent(
    '''
    from namex_bench import register_method
    from namex_bench.methods.smear import SMEAR


    class PluginMerge(SMEAR):
        """A merging method from a plugin distribution (entry point)."""


    @register_method("plugin_self_registered")
    class SelfRegistered(SMEAR):
        """A merging method that registers itself when its module is imported."""
    '''
)


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch, clean_registry):
    (tmp_path / "my_nbench_plugin.py").write_text(PLUGIN_SOURCE)
    dist = tmp_path / "my_nbench_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-nbench-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[namex_bench.methods]\nplugin_merge = my_nbench_plugin:PluginMerge\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield tmp_path
    sys.modules.pop("my_nbench_plugin", None)


def test_entry_point_discovery(plugin_dir):
    assert "plugin_merge" not in registry._METHODS
    registry._loaded["entry_points"] = False
    methods = namex_bench.available_methods()
    assert "plugin_merge" in methods
    cls = methods["plugin_merge"]
    assert cls.__name__ == "PluginMerge" and cls.name == "plugin_merge"
    assert cls.description().startswith("A merging method from a plugin")
    assert "plugin_self_registered" in methods  # importing the module ran its decorator
    assert BUILTIN <= set(methods)
    torch.manual_seed(0)
    y = MoELayer(SPEC, 4, "plugin_merge")(torch.randn(1, 3, 8)).y
    assert y.shape == (1, 3, 8)
    # a second look-up does not re-register (and does not raise)
    assert namex_bench.available_methods()["plugin_merge"] is cls


def test_load_plugins_imports_module(plugin_dir):
    assert "plugin_self_registered" not in registry._METHODS
    load_plugins(["my_nbench_plugin"])
    assert "plugin_self_registered" in namex_bench.available_methods()
    load_plugins(["my_nbench_plugin"])  # idempotent


def test_load_plugins_missing_module_raises_import_error():
    with pytest.raises(ImportError, match="nonexistent_module_xyz"):
        load_plugins(["nonexistent_module_xyz"])


def test_a_broken_entry_point_is_remembered_and_blocks_no_other(tmp_path, monkeypatch, clean_registry):
    (tmp_path / "my_nbench_good_plugin.py").write_text(
        "from namex_bench.methods.smear import SMEAR\n\n\nclass Good(SMEAR):\n    '''A good plugin.'''\n"
    )
    dist = tmp_path / "my_nbench_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-nbench-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[namex_bench.methods]\nbroken = nonexistent_module_xyz:X\ngood_after_broken = my_nbench_good_plugin:Good\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry._loaded["entry_points"] = False
    broken = dict(registry._BROKEN)
    try:
        methods = namex_bench.available_methods()  # does not raise: the broken one blocks nothing
        assert "good_after_broken" in methods and BUILTIN <= set(methods)
        assert "nonexistent_module_xyz" in registry.broken_entry_points()["broken"]
        # ... and a look-up of its method says why it is missing, every time (it is not silently skipped)
        for _ in range(2):
            with pytest.raises(KeyError, match="'broken' is not available: entry point 'broken' .*nonexistent_module_xyz"):
                get_method("broken")
    finally:
        sys.modules.pop("my_nbench_good_plugin", None)
        registry._BROKEN.clear()
        registry._BROKEN.update(broken)
