"""One numeric path per tokenizer version: which path a run's encoder computes on, and whether a
night may use it with its tokenizer.

The path (:class:`~u2qt_core.numeric_path.NumericPath`: device, precision, runtime) is resolved
on the driver, before any Spark job: ``encoder.device: auto`` means a GPU when the Spark conf
gives the executors GPUs (``spark.executor.resource.gpu.amount`` / ``spark.task.resource.gpu.amount``
> 0) or, under a ``local`` master, when the driver sees one; then ``encoder.dtype`` resolves
(``auto``: fp32 on CPU, bf16 autocast on GPU). The workers get an encoder config pinned to that
path (:func:`pinned_encoder`) and check that they run it (:mod:`pipelines.night.inference`),
so a night never falls back silently to another path.

:func:`check_night_path` compares the night's path with the one the bundle records: another path
is refused (:class:`~pipelines.errors.NumericPathRefused`) unless ``u2qt evaluate`` measured
its agreement (:mod:`pipelines.tokenizer.path_agreement`, stored on the registry version) at or
above ``gates.min_path_agreement``.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pipelines.errors import NumericPathRefused
from u2qt_core.encoders.text_config import TextEncoderConfig
from u2qt_core.numeric_path import NumericPath, path_from_dict, resolve_path

if TYPE_CHECKING:
    from pipelines.config.settings import PipelineSettings

log = logging.getLogger(__name__)

_GPU_CONFS = ("spark.executor.resource.gpu.amount", "spark.task.resource.gpu.amount")


def executor_device(encoder: TextEncoderConfig, spark: Any = None) -> str:
    """``cpu`` or ``cuda``: where the encoder will run on the executors (see the module doc)."""
    if encoder.device != "auto":
        return encoder.device
    if spark is None:
        from pyspark.sql import SparkSession

        spark = SparkSession.getActiveSession()
    if spark is not None:
        conf = spark.sparkContext.getConf()
        for key in _GPU_CONFS:
            try:
                if float(conf.get(key, "0") or 0) > 0:
                    return "cuda"
            except ValueError:
                continue
        if not str(spark.sparkContext.master).startswith("local"):
            return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def planned_path(settings: "PipelineSettings", spark: Any = None) -> NumericPath:
    """The numeric path this pipeline's encoder settings resolve to on its executors."""
    encoder = settings.encoder
    return resolve_path(encoder.dtype, encoder.int8_dynamic, executor_device(encoder, spark))


def pinned_encoder(encoder: TextEncoderConfig, path: NumericPath) -> TextEncoderConfig:
    """``encoder`` with device, dtype and int8 runtime fixed to ``path`` (no ``auto`` left)."""
    return encoder.model_copy(update=path.encoder_settings())


def check_night_path(settings: "PipelineSettings", version: str, contract: dict, tags: dict[str, str],
                     night: NumericPath) -> NumericPath:
    """Return ``night`` when tokenizer ``version`` may run on it, else raise
    :class:`NumericPathRefused` in one line naming both paths and the version.

    Accepted: the bundle's own path; a path whose full-tuple agreement recorded on the registry
    version (``tags``) is >= ``gates.min_path_agreement``; any path for a bundle that records none
    (trained before paths were recorded: a warning)."""
    trained = path_from_dict(contract.get("numeric_path"))
    if trained is None:
        log.warning("tokenizer %s records no numeric path (trained before paths were recorded): the night's "
                    "path %s is not checked; train a new version to pin one", version, night)
        return night
    if trained == night:
        return night
    bar = settings.gates.min_path_agreement
    from pipelines.tokenizer.registry import path_agreements

    measured = path_agreements(tags).get(night.label)
    if measured is None:
        raise NumericPathRefused(
            f"tokenizer {version} was trained on numeric path {trained} but this run's encoder settings resolve to "
            f"{night}, which `u2qt evaluate` has not validated: restore encoder.device/dtype/int8_dynamic, or add "
            f"{night} to gates.validate_paths and run `u2qt evaluate {version}`")
    agreement = float(measured.get("agreement", 0.0))
    if agreement < bar:
        raise NumericPathRefused(
            f"tokenizer {version} was trained on numeric path {trained} but this run's encoder settings resolve to "
            f"{night}, whose measured full-tuple agreement {agreement:.4f} is below gates.min_path_agreement={bar} "
            f"({measured.get('documents')} held-out documents): restore encoder.device/dtype/int8_dynamic")
    log.warning("tokenizer %s was trained on %s; this run uses %s, validated by `u2qt evaluate` at full-tuple "
                "agreement %.4f >= %s", version, trained, night, agreement, bar)
    return night
