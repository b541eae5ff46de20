"""Plugins from outside the repository (aim.plugins): a package names a module in the `aim.plugins` entry point
group, whose import registers its plugins; its `conf/` joins Hydra's search path. The fast tests lay out an
installed distribution by hand (a package and its .dist-info, as pip writes them) on sys.path; the slow one
pip-installs a package and runs `python -m aim.run` with its merger."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import aim.plugins
from aim.config import ConfigError, validate
from aim.merging import MERGERS
from aim.paths import CONF_DIR
from aim.pruning import PRUNERS

# a merger keeping every `stride`-th token of each frame, with its config schema
MERGER_SOURCE = """
from dataclasses import dataclass

import torch

from aim.checks import check_range
from aim.merging import MERGERS, Merged


@dataclass
class StrideConfig:
    name: str = "{name}"
    stride: int = 2

    def __post_init__(self):
        check_range("stride", self.stride, 1)


@MERGERS.register("{name}", config=StrideConfig)
class StrideMerger:
    needs = ()

    def __init__(self, name="{name}", stride=2):
        self.stride = stride

    def __call__(self, features, metric=None, attention=None):
        index = torch.arange(0, features.shape[1], self.stride, device=features.device)
        return Merged(features[:, index], index.expand(features.shape[0], -1))
"""

MERGER_YAML = "# keep every stride-th token of each frame\nname: {name}\nstride: 2\n"


def write_package(root: Path, package: str, module_source: str, conf: dict[str, str] | None = None) -> None:
    """`<root>/<package>/plugin.py` (and `conf/<file>` for each entry of conf)."""
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text("")
    (root / package / "plugin.py").write_text(module_source)
    for rel, text in (conf or {}).items():
        (root / package / "conf" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / package / "conf" / rel).write_text(text)


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Install a plugin distribution on sys.path the way pip lays it out (package + .dist-info with its entry
    point) and start from unloaded plugins; the registries and sys.modules are restored afterwards."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(aim.plugins, "_loaded", False)
    monkeypatch.setattr(aim.plugins, "_failure", None)
    monkeypatch.setattr(MERGERS, "_entries", dict(MERGERS._entries))
    monkeypatch.setattr(PRUNERS, "_entries", dict(PRUNERS._entries))
    packages = []

    def install(dist: str, package: str, module_source: str, conf: dict[str, str] | None = None) -> None:
        write_package(site, package, module_source, conf)
        info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[aim.plugins]\n{package} = {package}.plugin\n")
        packages.append(package)

    yield install
    for name in [m for m in sys.modules if m.split(".")[0] in packages]:
        del sys.modules[name]


def compose_run(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_an_installed_plugin_merger_composes_and_validates_like_a_built_in_one(installed):
    installed("stride-merger", "stride_merger", MERGER_SOURCE.format(name="stride"),
              conf={"merger/stride.yaml": MERGER_YAML.format(name="stride")})

    valid = validate(compose_run("merger=stride", "merger.stride=4"))
    assert type(valid.merger).__name__ == "StrideConfig" and valid.merger.stride == 4
    assert "stride" in MERGERS.names()
    with pytest.raises(ConfigError, match=r"merger\.strde: unknown field; allowed fields: name, stride"):
        validate(compose_run("merger=stride", "+merger.strde=4"))
    with pytest.raises(ConfigError, match=r"merger\.stride: must be in \[1, inf\), got 0"):
        validate(compose_run("merger=stride", "merger.stride=0"))


def test_a_plugin_that_fails_to_import_names_its_entry_point_distribution_and_line(installed):
    installed("broken-merger", "broken_merger", "import aim\nimport a_module_nobody_installed\n")

    expected = (r"plugin 'broken_merger = broken_merger.plugin' \(entry point group aim.plugins, distribution "
                r"broken-merger 0.1\) failed to load: ModuleNotFoundError: No module named "
                r"'a_module_nobody_installed' \(at .*broken_merger/plugin.py:2\)")
    with pytest.raises(ConfigError, match=expected):
        "aim" in MERGERS
    with pytest.raises(ConfigError, match=expected):  # every later lookup, not a misleading "unknown merger"
        MERGERS.names()


def test_a_plugin_registering_a_taken_name_fails_naming_both(installed):
    installed("shadowing-merger", "shadowing_merger", MERGER_SOURCE.format(name="aim"))  # line 19 registers

    with pytest.raises(ConfigError, match=r"plugin 'shadowing_merger = shadowing_merger.plugin' \(entry point group "
                       r"aim.plugins, distribution shadowing-merger 0.1\) failed to load: ValueError: merger 'aim' is "
                       r"already registered by aim.merging.bipartite.BipartiteMerger; shadowing_merger.plugin.StrideMerger "
                       r"cannot register it too \(at .*shadowing_merger/plugin.py:19\)"):
        MERGERS.get("aim")


def test_a_run_with_a_broken_plugin_fails_as_an_invalid_config(installed):
    installed("broken-merger", "broken_merger", "raise RuntimeError('half-written plugin')\n")

    with pytest.raises(ConfigError, match=r"broken-merger 0.1\) failed to load: RuntimeError: half-written plugin "
                       r"\(at .*broken_merger/plugin.py:1\)"):
        validate(compose_run())


# a pruner keeping half of the visual tokens from layer `at` on; {declare}: what it tells budget mode, if anything
PRUNER_SOURCE = """
from dataclasses import dataclass

import torch

from aim.checks import check_range
from aim.pruning import PRUNERS, BudgetMoves


@dataclass
class HalveConfig:
    name: str = "{name}"
    at: int = 2

    def __post_init__(self):
        check_range("at", self.at, 1)


@PRUNERS.register("{name}", config=HalveConfig)
class HalvePruner:
{declare}
    def __init__(self, name="{name}", at=2):
        self.at = at

    def retention_schedule(self, num_layers):
        return [1.0 if i < self.at else 0.5 for i in range(num_layers)]

    def importance(self, q, k, valid):
        return torch.zeros(q.shape[0], q.shape[2], device=q.device)
"""

HALVE_KNOBS = """
    budget_knobs = ("at",)

    @classmethod
    def budget_candidates(cls, fields, num_layers):
        L = num_layers
        return BudgetMoves({"at": L}, [{"at": a} for a in range(L - 1, 0, -1)], [{"at": a} for a in range(1, L + 1)])
"""


def halve_plan(name: str, declare: str, installed, *overrides: str):
    from aim.budget import BudgetPlan

    installed(f"{name}-pruner", f"{name}_pruner", PRUNER_SOURCE.format(name=name, declare=declare),
              conf={f"pruner/{name}.yaml": f"name: {name}\nat: 2\n"})
    return BudgetPlan(validate(compose_run("merger=none", f"pruner={name}", "budget.tradeoff=policy", *overrides)),
                      text_tokens=100)


def test_a_plugin_pruner_that_declares_its_budget_knobs_is_tuned_by_budget_mode(installed):
    """Budget mode reads a pruner's knobs and candidates from its registered class, so a plugin's own pruner is
    tuned without editing aim: the policy walks its declared path (the pruning layer moving earlier) to the
    first setting that fits."""
    from aim.budget import policy_order

    plan = halve_plan("halve", HALVE_KNOBS, installed, "budget.fraction=0.8")
    model = plan.model(plan.frames, 100)
    order = policy_order(plan.merger, plan.pruner, model.num_layers)
    assert [s.knobs()["pruner"] for s in order] == [{"name": "none"}] + [{"name": "halve", "at": a} for a in (3, 2, 1)]
    chosen = plan.choice.setting
    assert chosen.knobs()["pruner"]["name"] == "halve"
    assert plan.record()["fraction"] <= 0.8
    assert model.cost(order[order.index(chosen) - 1]).tflops > 0.8 * model.full.tflops  # the step before does not fit
    # and the trade-off tables show its declared knob, as AIM's l1/l2 (aim.tradeoff.knobs)
    from aim.tradeoff import pareto_rows, setting_text

    point = {"merger": {"name": "none"}, "pruner": {"name": "halve", "at": 2}, "tflops": 1e-4, "accuracy": 0.5,
             "pareto": True}
    assert pareto_rows({"points": [point]})[0]["pruner.at"] == 2 and setting_text(point) == "none + halve at=2"


def test_a_pruner_without_budget_knobs_is_refused_by_name_with_what_to_declare(installed):
    with pytest.raises(ConfigError, match=r"pruner.name: budget mode does not know the knobs of pruner 'plainhalve' "
                       r"\(its class declares no budget_knobs and budget_candidates\(fields, num_layers\)\); it knows: "
                       r"aim, .*fastv") as refused:
        halve_plan("plainhalve", "", installed, "budget.fraction=0.8")
    assert "dycoke" not in str(refused.value)  # it lists the pruners that declare knobs, not every registered one


PYPROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "aim-stride-merger"
version = "0.1.0"

[project.entry-points."aim.plugins"]
stride = "stride_merger.plugin"

[tool.setuptools.packages.find]
where = ["src"]

[tool.setuptools.package-data]
stride_merger = ["conf/*/*.yaml"]
"""


@pytest.mark.slow
def test_a_pip_installed_plugin_merger_runs_with_aim_run(tmp_path):
    source = tmp_path / "aim-stride-merger"
    write_package(source / "src", "stride_merger", MERGER_SOURCE.format(name="stride"),
                  conf={"merger/stride.yaml": MERGER_YAML.format(name="stride")})
    (source / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--target", str(site), str(source)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-3000:]

    env = {**os.environ, "AIM_DATA_DIR": str(tmp_path / "data"), "WANDB_SILENT": "true",
           "PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}

    def aim_run(out, *overrides):
        return subprocess.run([sys.executable, "-m", "aim.run", f"hydra.run.dir={out}", "merger=stride",
                               "dataset.num_samples=8", "dataset.limit=2", "logger=none", "eval.progress=false",
                               *overrides], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)

    refused = aim_run(tmp_path / "refused", "merger.stride=0")
    assert refused.returncode == 2 and "aim: invalid config: merger.stride: must be in [1, inf), got 0" in refused.stderr
    out = tmp_path / "run"
    proc = aim_run(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["method"]["merger"] == "stride" and results["config"]["merger"] == {"name": "stride", "stride": 2}
    assert results["num_samples"] == 2
