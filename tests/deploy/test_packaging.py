"""The package outside the checkout: default conf from an installed wheel and from a --py-files
zip, configs by URL, master resolution, and the spark-submit command line."""
from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading

import pytest

from tests.conftest import REPO_ROOT

PROBE = ("from pipelines.config.settings import load_settings; from pipelines.runtime.spark_session import load_profile; "
         "import pipelines; s = load_settings(); "
         "print(pipelines.__file__, s.sources_config().all_sources[0], load_profile('cluster-cpu').conf['spark.task.cpus'])")


def _probe(python_path: str, cwd) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "U2QT_CONF_DIR")}
    proc = subprocess.run([sys.executable, "-c", PROBE], env={**env, "PYTHONPATH": python_path, "TMPDIR": str(cwd)},
                          cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip()


def test_py_files_zip_finds_its_default_conf(tmp_path):
    from pipelines.deploy.submit import build_py_files_zip

    archive = build_py_files_zip(tmp_path / "dist")
    out = _probe(str(archive), tmp_path)
    assert out.startswith(str(archive)) and out.endswith("bill 1")
    assert list(tmp_path.glob("u2qt-conf-*/spark/cluster-cpu.yaml"))   # extracted once, next to TMPDIR


def test_installed_wheel_runs_without_the_checkout(tmp_path):
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(wheel_dir), str(REPO_ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next(wheel_dir.glob("u2qt-*.whl"))
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    out = _probe(str(target), tmp_path)
    assert out.startswith(str(target / "pipelines")) and out.endswith("bill 1")
    assert (target / "u2qt_dags" / "u2qt_daily.py").exists()
    assert (target / "bin" / "u2qt-submit").exists()


def test_config_from_an_http_url(tmp_path):
    from pipelines.config.settings import load_settings

    (tmp_path / "pipeline.yaml").write_text(f"tables_root: {tmp_path}/lake\nmodel_dir: {tmp_path}/model\n"
                                            "quality: {max_collision_rate: 0.25}\n")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/pipeline.yaml"
        assert load_settings(url).quality.max_collision_rate == 0.25
        from u2qt_core.errors import ConfigError

        with pytest.raises(ConfigError, match="missing.yaml: config could not be read"):
            load_settings(url.replace("pipeline", "missing"))
    finally:
        server.shutdown()


def test_master_comes_from_argument_then_environment_then_profile(monkeypatch):
    from pipelines.runtime.spark_session import load_profile, resolve_master
    from u2qt_core.errors import ConfigError

    for var in ("MASTER", "SPARK_MASTER", "SPARK_REMOTE"):
        monkeypatch.delenv(var, raising=False)
    local = load_profile("local")
    assert resolve_master(local) == "local[2]"
    assert resolve_master(load_profile("cluster-cpu")) is None
    monkeypatch.setenv("SPARK_MASTER", "spark://10.0.0.1:7077")
    assert resolve_master(local) == "spark://10.0.0.1:7077"
    monkeypatch.setenv("MASTER", "yarn")
    assert resolve_master(local) == "yarn"
    assert resolve_master(local, "local[1]") == "local[1]"
    with pytest.raises(ConfigError, match=r"^spark master sc://host:15002: Spark Connect is not supported"):
        resolve_master(local, "sc://host:15002")
    monkeypatch.setenv("SPARK_REMOTE", "sc://other:15002")
    with pytest.raises(ConfigError, match="sc://other:15002"):
        resolve_master(local)


def test_profile_by_path_and_unknown_profile(tmp_path):
    from pipelines.runtime.spark_session import load_profile
    from u2qt_core.errors import ConfigError

    path = tmp_path / "mine.yaml"
    path.write_text("master: spark://h:7077\nconf: {spark.executor.cores: '1'}\n")
    assert load_profile(str(path)).master == "spark://h:7077"
    with pytest.raises(ConfigError, match="unknown profile 'nope'.*known: cluster, cluster-cpu"):
        load_profile("nope")


def test_submit_command_carries_jars_py_files_and_delta_conf(tmp_path, monkeypatch):
    from pipelines.deploy.submit import build_py_files_zip, submit_command

    monkeypatch.delenv("MASTER", raising=False)
    monkeypatch.delenv("SPARK_MASTER", raising=False)
    zip_path = build_py_files_zip(tmp_path)
    argv = submit_command("stage", ["2026-01-05"], config="/etc/u2qt.yaml", profile="cluster-cpu",
                          master="spark://127.0.0.1:7077", py_files=zip_path, run_id="scheduled__x",
                          overrides=["inference.partitions=8"])
    assert argv[0].endswith("/bin/spark-submit")
    joined = " ".join(argv)
    assert "--master spark://127.0.0.1:7077" in joined and f"--py-files {zip_path}" in joined
    assert "delta-spark_" in argv[argv.index("--jars") + 1]
    assert "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension" in argv
    assert argv[-9:] == [str(REPO_ROOT / "pipelines" / "deploy" / "submit.py"), "stage", "2026-01-05", "--config",
                         "/etc/u2qt.yaml", "--set", "inference.partitions=8", "--run-id", "scheduled__x"]
