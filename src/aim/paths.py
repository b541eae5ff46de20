"""Where the package's own files are: the Hydra config tree, `conf/` at the repository's top level.

`src/aim/conf` is a relative symbolic link to it (`../../conf`), so the tree is inside the package: found
the same way from a checkout (`PYTHONPATH=src`, `pip install -e .`) and from an installed wheel, which
carries it as package data (pyproject.toml) and has no link, only the files.

A leaf module: the entry points (aim.run, aim.flops, aim.bench) and the analysis compose configs from here
without importing one another.
"""
from __future__ import annotations

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent / "conf"
