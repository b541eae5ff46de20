"""Plugins from outside the repository: a researcher's own merger, pruner, model adapter or dataset, in
their own installed package.

The package names a module in the entry point group `aim.plugins` (in its pyproject.toml):

    [project.entry-points."aim.plugins"]
    my_method = "my_pkg.plugin"

Importing that module registers its plugins with the usual decorators (`@MERGERS.register("my_method",
config=MyMethodConfig)`). The registries import every such module on their first lookup (`load_plugins`),
so a plugin is validated and built like a built-in one wherever a name is looked up. Config YAMLs in a
`conf/` directory of the module's top-level package (`my_pkg/conf/merger/my_method.yaml`) join Hydra's
search path (`config_dirs`, read by src/hydra_plugins/aim_plugin_configs), so `merger=my_method` composes.
"""
from __future__ import annotations

import importlib.util
import traceback
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from aim.checks import ConfigError

GROUP = "aim.plugins"


class PluginError(ConfigError):
    """An installed plugin that cannot be loaded; the message names its entry point and distribution."""


_loaded = False
_failure: PluginError | None = None


def load_plugins() -> None:
    """Import every `aim.plugins` entry point's module, once per process. A module that fails to import (or
    registers a name that is taken) raises PluginError naming the entry point, the distribution and where
    it failed; every later call raises it again (the registries stay incomplete)."""
    global _loaded, _failure
    if _failure is not None:
        raise _failure
    if _loaded:
        return
    _loaded = True  # first: a plugin that looks a name up while it registers must not load the plugins again
    for ep in entry_points(group=GROUP):
        try:
            ep.load()
        except Exception as exc:
            _failure = PluginError(f"plugin {describe(ep)} failed to load: {type(exc).__name__}: {exc}"
                                   f"{where(exc, ep.module.split('.')[0])}")
            raise _failure from exc


def describe(ep: EntryPoint) -> str:
    """`my_method = my_pkg.plugin` (entry point group aim.plugins, distribution my-pkg 0.1)."""
    dist = f"distribution {ep.dist.name} {ep.dist.version}" if ep.dist is not None else "unknown distribution"
    return f"'{ep.name} = {ep.value}' (entry point group {GROUP}, {dist})"


def where(exc: BaseException, package: str) -> str:
    """` (at <file>:<line>)`: the innermost line of the plugin's own package that the error passed through."""
    lines = [(frame.f_code.co_filename, line) for frame, line in traceback.walk_tb(exc.__traceback__)
             if frame.f_globals.get("__name__", "").split(".")[0] == package]
    return f" (at {lines[-1][0]}:{lines[-1][1]})" if lines else ""


def config_dirs() -> list[Path]:
    """The `conf/` directory of each plugin's top-level package, for the ones that ship configs. Found
    without importing the plugin (Hydra asks at every start-up)."""
    dirs = []
    for ep in entry_points(group=GROUP):
        spec = importlib.util.find_spec(ep.module.split(".")[0])
        for location in (spec.submodule_search_locations or []) if spec is not None else []:
            conf = Path(location) / "conf"
            if conf.is_dir() and conf not in dirs:
                dirs.append(conf)
    return dirs
