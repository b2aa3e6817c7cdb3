#!/usr/bin/env python3
"""Idempotent, cached set-up of everything u2qt needs on a fresh machine.

Steps (each skipped, and said so, when already done):

1. ``java``: check that Java 17+ is on PATH (Spark 4.2 needs it).
2. ``venv``: a virtual environment in the per-machine cache (``$U2QT_CACHE``, default
   ``~/.cache/u2qt``) with exactly the versions in ``requirements/lock.txt``. The cache is
   shared by every clone on the machine, so the ~3 GB CUDA build of torch that PyPI serves
   for Linux is installed once per machine. ``.venv`` in the repo links to it.
3. ``jars``: the Delta Lake jars for Spark 4.2 fetched from Maven Central with ``mvn`` into
   ``$U2QT_CACHE/jars/delta-<version>``, minus every artifact pyspark already ships.

Run with the system ``python3`` (standard library only)::

    python3 scripts/setup_env.py            # all steps
    python3 scripts/setup_env.py jars       # one step
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "requirements" / "lock.txt"
POM = REPO / "scripts" / "delta-jars" / "pom.xml"
PYTHON_VERSION = (3, 11)
# delta-spark 4.4.1 is the pinned Python package. Its Scala artifacts for Spark 4.2 were not
# on Maven Central when this was written (4.4.0 was); the first version that resolves is
# used and recorded, so the set-up picks up 4.4.1 as soon as it is published.
DELTA_JAR_VERSIONS = ("4.4.1", "4.4.0")
# Jars that must never come from Delta's dependency tree even when pyspark lacks that exact
# artifact: pyspark ships its own logging, JSON and Scala runtime, and mixing versions breaks.
ALWAYS_DROP = re.compile(r"^(jackson-|slf4j-|log4j-|scala-library|scala-reflect|shims-|commons-logging)")

log = logging.getLogger("u2qt.setup")


def cache_root() -> Path:
    return Path(os.environ.get("U2QT_CACHE", Path.home() / ".cache" / "u2qt")).expanduser()


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    log.debug("$ %s", " ".join(cmd))
    return subprocess.run(cmd, check=True, **kwargs)


def check_java() -> None:
    java = shutil.which("java")
    if java is None:
        raise SystemExit(
            "Java 17 or newer is required by Spark 4.2 but `java` is not on PATH. "
            "Install it (Debian/Ubuntu: `apt-get install openjdk-17-jre-headless`) and retry."
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8" style
        major = int(match.group(2))
    if major < 17:
        raise SystemExit(f"Java 17 or newer is required by Spark 4.2; found: {out.splitlines()[0] if out else '?'} at {java}")
    log.info("java: %s (ok)", out.splitlines()[0])


def _lock_digest() -> str:
    return hashlib.sha256(LOCK.read_bytes()).hexdigest()[:16]


def venv_dir() -> Path:
    return cache_root() / f"venv-py{PYTHON_VERSION[0]}{PYTHON_VERSION[1]}"


def ensure_venv() -> Path:
    venv = venv_dir()
    python = venv / "bin" / "python"
    stamp = venv / ".u2qt-lock"
    digest = _lock_digest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        log.info("venv: %s is up to date with requirements/lock.txt (%s): nothing to install", venv, digest)
    else:
        base = _find_base_python()
        if not python.exists():
            log.info("venv: creating %s with %s", venv, base)
            venv.parent.mkdir(parents=True, exist_ok=True)
            _run([base, "-m", "venv", str(venv)])
            _run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"])
        log.info("venv: installing requirements/lock.txt (%s); torch is ~3 GB on first install", digest)
        started = time.monotonic()
        _run([str(python), "-m", "pip", "install", "--progress-bar", "off", "-q", "-r", str(LOCK)])
        stamp.write_text(digest + "\n")
        log.info("venv: installed in %.0f s", time.monotonic() - started)
    link = REPO / ".venv"
    if link.is_symlink() or not link.exists():
        if not (link.is_symlink() and os.readlink(link) == str(venv)):
            if link.is_symlink():
                link.unlink()
            link.symlink_to(venv)
            log.info("venv: linked %s -> %s", link, venv)
    return venv


def _find_base_python() -> str:
    want = f"python{PYTHON_VERSION[0]}.{PYTHON_VERSION[1]}"
    if sys.version_info[:2] == PYTHON_VERSION:
        return sys.executable
    found = shutil.which(want)
    if found is None:
        raise SystemExit(f"Python {want} is required (the stack is pinned to it) but was not found on PATH")
    return found


def jars_dir() -> Path | None:
    """The folder of the resolved Delta jars, or None when none has been fetched."""
    for version in DELTA_JAR_VERSIONS:
        folder = cache_root() / "jars" / f"delta-{version}"
        if (folder / ".complete").exists():
            return folder
    return None


def _pyspark_jar_names(python: Path) -> set[str]:
    out = subprocess.run(
        [str(python), "-c", "import pyspark, os; print(os.path.join(os.path.dirname(pyspark.__file__), 'jars'))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    return {_artifact_name(p.name) for p in Path(out).glob("*.jar")}


def _artifact_name(jar: str) -> str:
    """``delta-storage-4.4.0.jar`` -> ``delta-storage``; ``zstd-jni-1.5.7-3.jar`` -> ``zstd-jni``."""
    stem = jar[:-4] if jar.endswith(".jar") else jar
    return re.sub(r"-\d[\w.\-]*$", "", stem)


def ensure_jars(python: Path) -> Path:
    existing = jars_dir()
    if existing is not None:
        jars = sorted(p.name for p in existing.glob("*.jar"))
        log.info("jars: %s already holds %d jars: nothing to fetch", existing, len(jars))
        return existing
    if shutil.which("mvn") is None:
        raise SystemExit("Maven (`mvn`) is required to fetch the Delta Lake jars from Maven Central; install it (apt-get install maven)")
    if not python.exists():
        raise SystemExit(f"the jars step needs the virtual environment first ({python} is missing): run `python3 scripts/setup_env.py venv`")
    shipped = _pyspark_jar_names(python)
    errors = []
    for version in DELTA_JAR_VERSIONS:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [
                "mvn", "-q", "-B", "-f", str(POM), f"-Ddelta.version={version}",
                "dependency:copy-dependencies", f"-DoutputDirectory={tmp}", "-DincludeScope=runtime",
            ]
            log.info("jars: resolving io.delta:delta-spark_4.2_2.13:%s from Maven Central", version)
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                errors.append(f"{version}: {proc.stdout.strip().splitlines()[-1:] or proc.stderr.strip()[-300:]}")
                log.warning("jars: delta %s could not be resolved; trying the next version", version)
                continue
            target = cache_root() / "jars" / f"delta-{version}"
            target.mkdir(parents=True, exist_ok=True)
            kept, dropped = [], []
            for jar in sorted(Path(tmp).glob("*.jar")):
                name = _artifact_name(jar.name)
                if name in shipped or ALWAYS_DROP.match(jar.name):
                    dropped.append(jar.name)
                    continue
                shutil.copy2(jar, target / jar.name)
                kept.append(jar.name)
            (target / ".complete").write_text("\n".join(kept) + "\n")
            log.info("jars: kept %d in %s: %s", len(kept), target, ", ".join(kept))
            log.info("jars: dropped %d that pyspark already ships (or must not be mixed)", len(dropped))
            if version != DELTA_JAR_VERSIONS[0]:
                log.warning("jars: using Delta jars %s: %s is not on Maven Central yet", version, DELTA_JAR_VERSIONS[0])
            return target
    raise SystemExit("could not resolve the Delta Lake jars from Maven Central:\n  " + "\n  ".join(errors))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("steps", nargs="*", help="any of: java venv jars all (default: all)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    unknown = set(args.steps) - {"java", "venv", "jars", "all"}
    if unknown:
        parser.error(f"unknown step(s): {', '.join(sorted(unknown))}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="[setup] %(message)s")
    steps = {"java", "venv", "jars"} if not args.steps or "all" in args.steps else set(args.steps)
    started = time.monotonic()
    if "java" in steps:
        check_java()
    venv = venv_dir()
    if "venv" in steps:
        venv = ensure_venv()
    if "jars" in steps:
        ensure_jars(venv / "bin" / "python")
    log.info("set-up done in %.1f s (cache: %s)", time.monotonic() - started, cache_root())
    return 0


if __name__ == "__main__":
    sys.exit(main())
