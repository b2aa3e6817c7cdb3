"""The Python daemon of an executor, with the encoder's libraries imported once before it forks
workers: ``spark.python.daemon.module`` of every local and local-cluster session
:func:`pipelines.runtime.spark_session.get_spark` builds. Under spark-submit the executors import
this project from ``--py-files``, which a worker adds to its path only after it started, so the
daemon cannot; set ``spark.python.daemon.module`` in the cluster profile where the executors'
Python has the package installed.

PySpark's daemon (``pyspark.daemon``) forks one Python worker per task slot and imports
``pyspark.worker`` only after the fork. Spark ends a worker idle for 60 s (hard-coded), so a
worker of the next job -- the next night's stage, a backfill's later pass, a test's next date --
starts cold and imports torch and transformers again before the inference UDF can load its
model: about 5-6 of the ~8 CPU-s a cold worker costs here (``python -X importtime``: torch 2.4 s,
transformers' model loading stack with ``torch._dynamo`` 3.5 s). Importing them in the daemon
instead pays that once per executor: every forked worker inherits the modules (copy-on-write
pages), whenever it is forked. The model weights are still loaded by the worker
(:func:`pipelines.night.inference.get_runtime`), once per worker.

Fork safety: only imports run here, never a torch operation, so no OpenMP team or CUDA context
exists when the daemon forks (the same state a PyTorch ``DataLoader`` forks its workers from).
``pandas`` and ``pyarrow``, which PySpark keeps out of the daemon because they start threads on
import, are not imported. A failed import is logged and the daemon runs as PySpark's own.
"""
from __future__ import annotations

import os
import sys

#: set in the daemon, so inherited by every worker it forks: the modules it preloaded
PRELOADED_ENV = "U2QT_DAEMON_PRELOADED"

#: what a worker's inference imports on its way to ``from_pretrained`` (the BERT family is
#: MiniLM, the default encoder); a model of another family imports its own module in the worker
PRELOADED = (
    "torch",
    "transformers.modeling_utils",
    "transformers.integrations.hub_kernels",
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto",
    "transformers.models.bert.modeling_bert",
    "u2qt_core.encoders.text",
)


def preload(modules: tuple[str, ...] = PRELOADED) -> list[str]:
    """Import ``modules``; returns those that failed (named on stderr, which Spark logs)."""
    import importlib

    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 -- the daemon must start whatever is missing
            failed.append(name)
            print(f"u2qt python daemon: could not preload {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return failed


def main() -> None:
    """Preload, then run PySpark's daemon (it forks the workers)."""
    from pyspark import daemon

    failed = preload()
    os.environ[PRELOADED_ENV] = ",".join(name for name in PRELOADED if name not in failed)
    daemon.manager()


if __name__ == "__main__":
    main()
