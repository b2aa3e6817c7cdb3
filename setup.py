"""Package layout (metadata and dependencies are in pyproject.toml).

``conf/`` stays where it is in the repository and is shipped as the package ``u2qt_conf`` (its
YAML files as package data), so an installed wheel or a ``--py-files`` zip finds its default
configuration without a checkout (see pipelines/config/conf_files.py). ``dags/`` ships as ``u2qt_dags``
so a platform team can point Airflow's DAG folder at the installed copy.
"""
from pathlib import Path

from setuptools import find_packages, setup

CONF_PACKAGES = ["u2qt_conf", *(f"u2qt_conf.{d.name}" for d in sorted(Path("conf").iterdir()) if d.is_dir())]

setup(
    packages=[*find_packages(include=["u2qt_core", "u2qt_core.*", "pipelines", "pipelines.*"]), *CONF_PACKAGES, "u2qt_dags"],
    package_dir={"u2qt_conf": "conf", "u2qt_dags": "dags"},
    package_data={**{name: ["*.yaml"] for name in CONF_PACKAGES}, "u2qt_dags": ["*.py"]},
)
