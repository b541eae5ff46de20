"""One small registry used by every plugin family (models, datasets, mergers, pruners).

A plugin registers under a name with a decorator and, optionally, the dataclass that is its config schema:

    MERGERS = Registry("merger")

    @MERGERS.register("none", config=NoMergeConfig)
    class NoMerge: ...

`build(name, **cfg)` constructs it; an unknown name fails with the list of known names. Every lookup first
loads the plugins installed from outside the repository (`aim.plugins`), so they are found like built-in ones.
"""
from __future__ import annotations

from typing import Any, Callable

from aim.plugins import load_plugins


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
                raise ValueError(f"{self.family} {name!r} is already registered by {qualified(self._entries[name][0])}; "
                                 f"{qualified(obj)} cannot register it too")
            self._entries[name] = (obj, config)
            return obj

        return decorator

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._entries)

    def _entry(self, name: str):
        if name not in self:
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
        load_plugins()
        return name in self._entries


def qualified(obj) -> str:
    """`module.QualName` of a registered class or function."""
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
