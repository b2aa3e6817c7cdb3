"""YAML loading shared by the pipeline configs: ``${VAR:-default}`` expansion and errors that
name the file and the key path."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from pipelines.conf_files import PACKAGE_ROOT, default_conf_dir, is_url, read_url
from u2qt_core.config import format_validation_error
from u2qt_core.errors import ConfigError

REPO_ROOT = PACKAGE_ROOT          # a checkout, site-packages, or a --py-files zip
CONF_DIR = default_conf_dir()     # see pipelines/conf_files.py for the lookup order
_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

Model = TypeVar("Model", bound=BaseModel)


def expand_env(value: Any) -> Any:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in every string of a YAML tree."""
    if isinstance(value, str):
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is None:
                raise ConfigError(f"environment variable {name} is not set and has no default")
            return default
        return _ENV_PATTERN.sub(substitute, value)
    if isinstance(value, dict):
        return {key: expand_env(item) for key, item in value.items()}
    if isinstance(value, list):
        return [expand_env(item) for item in value]
    return value


def deep_merge(base: dict, overrides: dict | None) -> dict:
    """A copy of ``base`` with ``overrides`` merged in (nested dicts merge, other values replace)."""
    merged = dict(base)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping from a file or an http(s):// / file:// URL; errors name the file."""
    if is_url(path):
        text = read_url(str(path))
    else:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: config file not found")
        text = path.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def load_model(model: type[Model], path: str | Path, overrides: dict | None = None) -> Model:
    """Load ``path`` into the pydantic ``model`` with env expansion and key-naming errors."""
    raw = deep_merge(expand_env(read_yaml(path)), overrides)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from None
