"""Puts the config YAMLs that aim's plugins from outside the repository ship (`<their package>/conf/`) on
Hydra's search path, after aim's own `conf/`, so `merger=my_method` composes like a built-in option. Hydra
only discovers plugins in the `hydra_plugins` namespace, hence this thin class; which directories, and why,
is `aim.plugins.config_dirs`. Hydra runs it at every start-up: it imports no plugin."""
from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class AimPluginConfigs(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from aim.plugins import config_dirs

        for conf in config_dirs():
            search_path.append(provider="aim-plugin", path=f"file://{conf}")
