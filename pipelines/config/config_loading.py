"""Where the pipeline's configs live, and how a config *location* is read: a file, or an
http(s):// / file:// URL (the package can run outside a checkout, see
:mod:`pipelines.config.conf_files`).  Parsing, ``${VAR:-default}`` expansion, deep-merge and the
key-naming errors are the project's one loader, :mod:`u2qt_core.config_loader`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from pipelines.config.conf_files import PACKAGE_ROOT, default_conf_dir, is_url, read_url
from u2qt_core.config_loader import expand_env, load_yaml_model, read_yaml

REPO_ROOT = PACKAGE_ROOT          # a checkout, site-packages, or a --py-files zip
CONF_DIR = default_conf_dir()     # see pipelines/config/conf_files.py for the lookup order

Model = TypeVar("Model", bound=BaseModel)


def load_model(model: type[Model], location: str | Path, overrides: dict[str, Any] | None = None) -> Model:
    """:func:`u2qt_core.config_loader.load_yaml_model` of a file or URL."""
    text = read_url(str(location)) if is_url(location) else None
    return load_yaml_model(model, location, overrides, text=text)


def load_raw(location: str | Path) -> dict[str, Any]:
    """The mapping of a config file or URL, environment variables expanded, not validated."""
    text = read_url(str(location)) if is_url(location) else None
    return expand_env(read_yaml(location, text), str(location))
