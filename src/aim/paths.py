"""Where the package's own files are: the Hydra config tree (`conf/` at the repository's top level).

A leaf module: the entry points (aim.run, aim.flops, aim.bench) and the analysis compose configs from here
without importing one another.
"""
from __future__ import annotations

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
