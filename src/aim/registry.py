"""One small registry used by every plugin family (models, datasets, mergers, pruners).

A plugin registers under a name with a decorator and, optionally, the dataclass that is its config schema:

    MERGERS = Registry("merger")

    @MERGERS.register("none", config=NoMergeConfig)
    class NoMerge: ...

`build(name, **cfg)` constructs it; an unknown name fails with the list of known names.
"""
from __future__ import annotations

from typing import Any, Callable


class UnknownPluginError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; a plain sentence reads better
        return str(self.args[0])


class Registry:
    def __init__(self, family: str):
        self.family = family
        self._entries: dict[str, tuple[Callable[..., Any], type | None]] = {}

    def register(self, name: str, config: type | None = None):
        def decorator(obj):
            if name in self._entries:
                raise ValueError(f"{self.family} {name!r} is already registered")
            self._entries[name] = (obj, config)
            return obj

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def _entry(self, name: str):
        if name not in self._entries:
            raise UnknownPluginError(
                f"unknown {self.family} {name!r}; registered {self.family}s: {', '.join(self.names()) or '(none)'}"
            )
        return self._entries[name]

    def get(self, name: str) -> Callable[..., Any]:
        return self._entry(name)[0]

    def config_schema(self, name: str) -> type | None:
        """The dataclass that validates this plugin's config, or None if it declares none."""
        return self._entry(name)[1]

    def build(self, name: str, /, **cfg: Any) -> Any:
        return self.get(name)(**cfg)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
