"""The bundled toy LLaVA-OneVision model: its tokenizer, architecture and training script."""
from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def asset_dir(name: str) -> Path:
    path = ASSETS / name
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"bundled asset {name!r} not found under {ASSETS}; train it with `python -m aim.toy.train`"
        )
    return path
