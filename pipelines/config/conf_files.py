"""Where the default ``conf/`` lives, wherever the code runs, and config files given as URLs.

The code finds its default configuration in this order:

1. ``$U2QT_CONF_DIR`` when set (a deployment's own copy of ``conf/``);
2. ``<checkout>/conf`` next to ``pipelines/`` (a git checkout);
3. ``<site-packages>/u2qt_conf`` (an installed wheel: ``conf/`` is shipped as the package data of
   ``u2qt_conf``, see setup.py);
4. ``u2qt_conf/`` inside the zip that holds ``pipelines/`` (a ``spark-submit --py-files u2qt.zip``
   driver or executor): extracted once per zip into a temp folder, because YAML loading, profile
   listing and relative paths all want a real directory.

A ``--config`` may also be an ``http(s)://`` or ``file://`` URL (read once, never cached).
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from u2qt_core.errors import ConfigError

log = logging.getLogger(__name__)

PACKAGE_ROOT = Path(__file__).resolve().parents[2]   # pipelines/config/ -> checkout root, site-packages, or the zip file
CONF_PACKAGE = "u2qt_conf"
URL_SCHEMES = ("http://", "https://", "file://")


def default_conf_dir() -> Path:
    """The folder holding ``pipeline.yaml``, ``sources.yaml``, ``spark/``, ``model/`` ... (see module doc)."""
    override = os.environ.get("U2QT_CONF_DIR")
    if override:
        path = Path(override).expanduser()
        if not (path / "pipeline.yaml").exists():
            raise ConfigError(f"U2QT_CONF_DIR={override}: no pipeline.yaml there")
        return path
    for candidate in (PACKAGE_ROOT / "conf", PACKAGE_ROOT / CONF_PACKAGE):
        if (candidate / "pipeline.yaml").is_file():
            return candidate
    if zipfile.is_zipfile(PACKAGE_ROOT):
        return _extract_from_zip(PACKAGE_ROOT)
    raise ConfigError(f"no default conf/ found next to {PACKAGE_ROOT} (set U2QT_CONF_DIR or pass --config)")


def _extract_from_zip(archive: Path) -> Path:
    """Extract ``u2qt_conf/`` of ``archive`` once into ``$TMPDIR/u2qt-conf-<hash>/`` and return it."""
    stat = archive.stat()
    digest = hashlib.sha1(f"{archive}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / f"u2qt-conf-{digest}"
    if not (target / "pipeline.yaml").exists():
        staging = Path(tempfile.mkdtemp(prefix="u2qt-conf-", dir=tempfile.gettempdir()))
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.namelist() if m.startswith(f"{CONF_PACKAGE}/") and not m.endswith("/")]
            if not members:
                raise ConfigError(f"{archive}: the zip holds no {CONF_PACKAGE}/ folder (rebuild it with `u2qt package`)")
            for member in members:
                out = staging / member[len(CONF_PACKAGE) + 1:]
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(zf.read(member))
        try:
            staging.rename(target)       # atomic: concurrent Python workers race harmlessly
        except OSError:
            pass
        log.info("default conf extracted from %s to %s", archive, target)
    return target


def is_url(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(URL_SCHEMES)


def read_url(url: str, timeout_s: float = 30.0) -> str:
    """The text at ``url``; a one-line ConfigError naming it when it cannot be read."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (config location)
            return response.read().decode("utf-8")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{url}: config could not be read: {exc}") from None
