"""Token pruners inside the LLM. Until the pruning issue lands only `none` (no pruning) is registered.

A pruner exposes `retention_schedule(num_layers) -> list[float]`: the fraction of the original visual
tokens each decoder layer sees. The evaluation records it as visual tokens per layer.
"""
from __future__ import annotations

from dataclasses import dataclass

from aim.registry import Registry

PRUNERS = Registry("pruner")


@dataclass
class NoPruneConfig:
    name: str = "none"


@PRUNERS.register("none", config=NoPruneConfig)
class NoPrune:
    """Every decoder layer sees every visual token."""

    def __init__(self, name: str = "none"):
        self.name = name

    def retention_schedule(self, num_layers: int) -> list[float]:
        return [1.0] * num_layers
