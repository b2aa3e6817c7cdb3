"""The one way a u2qt YAML config becomes a validated pydantic model.

Every config of the project (model presets, ``conf/eval.yaml``, ``conf/pipeline.yaml``,
``conf/sources.yaml``, Spark profiles, world configs) is read by :func:`load_yaml_model`:

1. :func:`read_yaml` reads the file; the top level must be a mapping;
2. :func:`expand_env` replaces ``${NAME}`` / ``${NAME:-default}`` in every string;
3. :func:`deep_merge` merges overrides in (``--set key.path=value`` via :func:`parse_overrides`);
4. the pydantic model validates the result.

Every problem is a :class:`~u2qt_core.errors.ConfigError` whose lines read
``"<file>: <key.path>: <problem>"`` (``<root>`` for the top level), so the CLI's one error path
can print it as it is.  This module lives in ``u2qt_core`` so both the core and ``pipelines``
use it (``u2qt_core`` never imports ``pipelines``).
"""

from __future__ import annotations

import copy
import logging
import os
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from u2qt_core.errors import ConfigError

__all__ = [
    "KeyProblem",
    "deep_merge",
    "expand_env",
    "format_validation_error",
    "load_yaml_model",
    "parse_overrides",
    "read_yaml",
    "validate_model",
]

logger = logging.getLogger(__name__)

Model = TypeVar("Model", bound=BaseModel)

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


class KeyProblem(ValueError):
    """A cross-field validation problem attached to a key below the model being validated.

    Raise it from a pydantic ``model_validator`` to have the error name ``<model key>.<key>``
    instead of the model itself.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.problem = message


def format_validation_error(error: ValidationError, origin: str) -> str:
    """Render a pydantic error as ``"<origin>: <key.path>: <problem>"`` lines (one per problem)."""
    lines = []
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        kind = item["type"]
        ctx = item.get("ctx") or {}
        cause = ctx.get("error")
        message = item["msg"]
        if isinstance(cause, KeyProblem):
            loc.append(cause.key)
            message = cause.problem
        elif kind == "value_error" and isinstance(cause, Exception):
            message = str(cause)
        elif kind == "extra_forbidden":
            message = "unknown key"
        elif kind == "missing":
            message = "required key is missing"
        elif kind in _BOUNDS:
            bound = next(iter(ctx.values()), "?")
            message = f"must be {_BOUNDS[kind]} {bound} (got {item.get('input')!r})"
        key_path = ".".join(loc) if loc else "<root>"
        lines.append(f"{origin}: {key_path}: {message}")
    return "\n".join(lines)


def deep_merge(base: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of ``base`` with ``overrides`` merged in.

    Nested dicts merge key by key, other values replace, and ``None`` deletes the key so the
    model's default applies (e.g. to drop a source's entry from ``input_dims`` after narrowing
    ``sources``).  Neither argument is modified.
    """
    merged = copy.deepcopy(base)
    for key, value in (overrides or {}).items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def expand_env(value: Any, origin: str = "<config>", key_path: str = "") -> Any:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in every string of a YAML tree.

    A variable that is unset and has no default is a :class:`ConfigError` naming ``origin``,
    the key path and the variable.
    """
    if isinstance(value, str):
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is None:
                raise ConfigError(f"{origin}: {key_path or '<root>'}: environment variable {name} is not set "
                                  "and has no default (write ${" + name + ":-default} or set it)")
            return default
        return _ENV_PATTERN.sub(substitute, value)
    if isinstance(value, dict):
        return {key: expand_env(item, origin, f"{key_path}.{key}" if key_path else str(key))
                for key, item in value.items()}
    if isinstance(value, list):
        return [expand_env(item, origin, f"{key_path}.{i}" if key_path else str(i)) for i, item in enumerate(value)]
    return value


def read_yaml(path: str | Path, text: str | None = None) -> dict[str, Any]:
    """Read a YAML mapping (an empty file is ``{}``); errors name the file.  ``text``: the
    content already fetched from ``path`` (a URL, see :mod:`pipelines.config.config_loading`)."""
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read config file: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: <root>: expected a mapping of keys, got {type(data).__name__}")
    return data


def validate_model(model: type[Model], data: dict[str, Any], origin: str) -> Model:
    """Validate ``data`` as ``model``; errors are :class:`ConfigError` lines naming ``origin`` and keys."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, origin)) from None


def load_yaml_model(model: type[Model], path: str | Path, overrides: dict[str, Any] | None = None, *,
                    text: str | None = None) -> Model:
    """Read ``path`` (or its already-fetched ``text``), expand environment variables, deep-merge
    ``overrides``, validate as ``model``."""
    raw = deep_merge(expand_env(read_yaml(path, text), str(path)), overrides)
    config = validate_model(model, raw, str(path))
    logger.debug("loaded %s from %s", model.__name__, path)
    return config


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``["quality.max_collision_rate=0.2", "inference.partitions=8"]`` -> nested dict.

    Values are parsed as YAML (``8`` is an int, ``null`` deletes the key, see :func:`deep_merge`).
    A pair without ``=`` or with an empty key is a :class:`ConfigError` naming it.
    """
    nested: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        parts = [part.strip() for part in key.split(".")]
        if not sep or not all(parts):
            raise ConfigError(f"--set {pair!r}: expected key.path=value, e.g. inference.partitions=8")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {pair!r}: value is not valid YAML: {' '.join(str(exc).split())}") from None
        cursor = nested
        for part in parts[:-1]:
            child = cursor.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {pair!r}: {part} was already set to a value, not a mapping")
            cursor = child
        cursor[parts[-1]] = parsed
    return nested
