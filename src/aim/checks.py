"""The errors and checks every plugin's config schema uses: a leaf module (it imports nothing of aim), so the
families (models, datasets, mergers, pruners) check their fields without importing `aim.config`, which sits
above them (its `validate` looks their schemas up in their registries).

A schema's `__post_init__` raises ValueError("<field>: <what is wrong and what is allowed>") through
`check_range` / `check_choice`; `to_schema` merges a config node into the schema and turns any such error into
a ConfigError naming the full field path (`merger.ratio: must be in (0, 1], got 2`).
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, InterpolationResolutionError, MissingMandatoryValue, ValidationError


class ConfigError(ValueError):
    """An invalid config; the message names the field and the allowed values."""


def check_choice(name: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: {value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}")


def check_range(name: str, value, low=None, high=None, low_open=False, high_open=False) -> None:
    """Raise unless low <(=) value <(=) high; None bounds are open-ended."""
    bad = (low is not None and (value <= low if low_open else value < low)) or (
        high is not None and (value >= high if high_open else value > high)
    )
    if bad:
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise ValueError(f"{name}: must be in {interval}, got {value!r}")


def to_schema(schema: type, node: DictConfig | dict, path: str):
    """Merge a config node into its dataclass schema: unknown keys, wrong types and out-of-range values
    raise ConfigError naming `path.field`."""
    allowed = ", ".join(f.name for f in fields(schema))
    try:
        if isinstance(node, DictConfig):  # interpolations resolve in the whole config, as the run sees them
            node = OmegaConf.to_container(node, resolve=True)
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        return OmegaConf.to_object(merged)
    except MissingMandatoryValue as exc:
        raise ConfigError(f"{path}.{getattr(exc, 'key', '?')}: missing; this field needs a value") from None
    except InterpolationResolutionError as exc:
        key = str(getattr(exc, "full_key", None) or getattr(exc, "key", "?")).removeprefix(f"{path}.")
        raise ConfigError(f"{path}.{key}: {str(exc).splitlines()[0]}") from None
    except ConfigKeyError as exc:
        key = getattr(exc, "key", None) or str(exc).split("'")[1]
        raise ConfigError(f"{path}.{key}: unknown field; allowed fields: {allowed}") from None
    except ValidationError as exc:
        key = getattr(exc, "full_key", None) or getattr(exc, "key", "?")
        raise ConfigError(f"{path}.{key}: {exc.msg if hasattr(exc, 'msg') else exc}".split("\n")[0]) from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}.{exc}") from None
