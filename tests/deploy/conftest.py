"""Services the deployment tests start for real, on 127.0.0.1 and free ports chosen at run time:
a Spark standalone master and worker (README "Deployment", step 4). Every process is started in
its own session so that teardown ends it and all it started (executors, task processes) by its
process group, and nothing else."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import SHORT_JVM_OPTS  # noqa: F401 (the deployment tests import it from here)


# what the test process may have set for itself (other tests' fixtures, get_spark) and a
# service must not inherit: each service gets exactly the environment README step 1/3 exports
_INHERITED_NOT = ("PYTHONPATH", "U2QT_PIPELINE_CONFIG", "MASTER", "SPARK_MASTER", "SPARK_REMOTE",
                  "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET",
                  "SPARK_HOME", "SPARK_LOCAL_IP", "SPARK_CONF_DIR", "SPARK_SUBMIT_OPTS")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spark_home() -> str:
    import pyspark

    return os.path.dirname(pyspark.__file__)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without Airflow/Spark/u2qt settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _INHERITED_NOT and not k.startswith("AIRFLOW")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.update(extra)
    return env


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"<{path}: {exc}>"


class Service:
    """A long-running command with its output in ``log``; :meth:`stop` ends its process group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path, cwd: Path):
        self.name, self.argv, self.log = name, argv, log
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self._out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{tail(self.log)}")

    def stop(self, grace_s: float = 20) -> None:
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)     # the group this Popen created (start_new_session)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
            # the leader is gone; children still in its group (executors, task runners) follow
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            break
        self._out.close()


def wait_for(what: str, probe: Callable[[], object], timeout_s: float, services: list[Service],
             every_s: float = 1.0):
    """Call ``probe`` until it returns something truthy; fail naming ``what`` with the services'
    log tails after ``timeout_s`` or as soon as one of them exits."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        for service in services:
            service.check()
        try:
            last = probe()
        except (OSError, ValueError) as exc:    # not listening yet, half-written JSON
            last = exc
        else:
            if last:
                return last
        time.sleep(every_s)
    logs = "\n".join(f"--- {s.name} ({s.log}):\n{tail(s.log)}" for s in services)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})\n{logs}")


def http_json(url: str, timeout_s: float = 10):
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="session")
def spark_standalone(tmp_path_factory):
    """A Spark standalone master and one worker (2 cores, 2 GiB), as README step 4 starts them,
    on free ports of 127.0.0.1; yields the master URL and its web UI; both stopped at teardown."""
    root = tmp_path_factory.mktemp("spark-standalone")
    home = spark_home()
    spark_class = str(Path(home) / "bin" / "spark-class")
    port, ui, worker_port, worker_ui = (free_port() for _ in range(4))
    # SPARK_LOCAL_IP keeps the daemons and the drivers they talk to on 127.0.0.1;
    # SPARK_DAEMON_JAVA_OPTS reaches only the master and worker JVMs (spark-class)
    env = clean_env(SPARK_HOME=home, SPARK_LOCAL_IP="127.0.0.1")
    daemon_env = {**env, "SPARK_DAEMON_JAVA_OPTS": SHORT_JVM_OPTS}
    master_url = f"spark://127.0.0.1:{port}"
    services: list[Service] = []
    try:
        services.append(Service("spark-master", [
            spark_class, "org.apache.spark.deploy.master.Master",
            "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui)],
            daemon_env, root / "master.log", root))
        services.append(Service("spark-worker", [
            spark_class, "org.apache.spark.deploy.worker.Worker", master_url, "--cores", "2", "--memory", "2g",
            "--host", "127.0.0.1", "--port", str(worker_port), "--webui-port", str(worker_ui),
            "--work-dir", str(root / "work")],
            daemon_env, root / "worker.log", root))
        ui_url = f"http://127.0.0.1:{ui}/json/"
        wait_for("the worker to register with the master",
                 lambda: any(w.get("state") == "ALIVE" for w in http_json(ui_url).get("workers", [])),
                 timeout_s=180, services=services)
        yield {"master": master_url, "ui": ui_url, "root": root, "services": services, "env": env}
    finally:
        for service in reversed(services):
            service.stop()
