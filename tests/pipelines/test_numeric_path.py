"""One numeric path per tokenizer version (issue #27 item 3): the bundle records the path its
training embedded on; a night on another path is refused before inference unless ``u2qt
evaluate`` measured that path's agreement at or above ``gates.min_path_agreement``.

CPU bf16 autocast stands in for the GPU path (no GPU here). The first tests need no Spark; the
last three share one module-scoped copy of the trained lake, evaluated once."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.conftest import make_settings
from pipelines.lake.lake import Lake

BF16 = "cpu/bf16-autocast/eager"
INT8 = "cpu/fp32/int8-dynamic"


# ---- no Spark -------------------------------------------------------------------------------------

def test_paths_parse_and_resolve_from_the_dtype_policy():
    from u2qt_core.errors import ConfigError
    from u2qt_core.numeric_path import NumericPath, parse_path, resolve_path

    assert parse_path("cpu/bf16-autocast") == NumericPath("cpu", "bf16-autocast", "eager")
    assert parse_path(INT8).label == INT8
    assert resolve_path("auto", False, "cpu").label == "cpu/fp32/eager"
    assert resolve_path("auto", False, "cuda").label == "cuda/bf16-autocast/eager"
    assert resolve_path("bfloat16-autocast", False, "cpu").label == BF16
    assert resolve_path("auto", True, "cpu").label == INT8
    for bad in ("gpu/fp32", "cpu", "cpu/fp8", "cuda/fp32/int8-dynamic"):
        with pytest.raises(ConfigError):
            parse_path(bad)


def test_the_encoder_really_runs_bf16_autocast_on_cpu_when_asked():
    from u2qt_core.encoders.text import TextEncoder, TextEncoderConfig

    texts = ["paid the electricity bill online", "watched a documentary about whales", "ordered running shoes"]
    fp32 = TextEncoder(TextEncoderConfig(device="cpu"))
    bf16 = TextEncoder(TextEncoderConfig(device="cpu", dtype="bfloat16-autocast"))
    assert fp32.numeric_path.label == "cpu/fp32/eager" and bf16.numeric_path.label == BF16
    a, b = fp32.encode(texts), bf16.encode(texts)
    assert not np.array_equal(a, b)                     # another path: other floats...
    assert float((a * b).sum(axis=1).min()) > 0.99     # ...of nearly the same vectors


def test_agreement_figures_per_level_prefix_and_user_day():
    from pipelines.tokenizer.path_agreement import agreement

    keys = [(1, "d"), (2, "d"), (3, "d"), (4, "d")]
    ref = {"bill": (keys, np.array([[1, 2, 3], [1, 2, 3], [1, 2, 3], [1, 2, 3]])),
           "web": (keys[:2], np.array([[5, 5, 5], [6, 6, 6]]))}
    other = {"bill": (keys, np.array([[1, 2, 3], [1, 2, 9], [1, 9, 3], [9, 2, 3]])),
             "web": (keys[:2], np.array([[5, 5, 5], [6, 6, 7]]))}
    got = agreement(ref, other)
    assert got["documents"] == 6
    assert got["per_level"] == pytest.approx([5 / 6, 5 / 6, 4 / 6])
    assert got["prefix"] == pytest.approx([5 / 6, 4 / 6, 2 / 6])
    assert got["agreement"] == pytest.approx(2 / 6)
    assert got["user_day_agreement"] == pytest.approx(1 / 4) and got["user_days"] == 4   # only user 1 keeps all
    assert got["per_source"] == pytest.approx({"bill": 1 / 4, "web": 1 / 2})


def test_the_night_check_names_the_version_and_both_paths():
    import json

    from pipelines.config.settings import load_settings
    from pipelines.errors import NumericPathRefused
    from pipelines.night.numeric_path import check_night_path
    from pipelines.tokenizer.registry import PATHS_TAG
    from u2qt_core.numeric_path import parse_path

    settings = load_settings(overrides={"gates": {"min_path_agreement": 0.99}})
    contract = {"numeric_path": {"device": "cpu", "precision": "fp32", "runtime": "eager"}}
    night = parse_path(BF16)
    assert check_night_path(settings, "u2qt-v", contract, {}, parse_path("cpu/fp32")) == parse_path("cpu/fp32")
    with pytest.raises(NumericPathRefused, match=r"^tokenizer u2qt-v was trained on numeric path cpu/fp32/eager .* "
                                                 r"resolve to cpu/bf16-autocast/eager, which `u2qt evaluate` has not"):
        check_night_path(settings, "u2qt-v", contract, {}, night)
    low = {PATHS_TAG: json.dumps({BF16: {"agreement": 0.963, "documents": 1200}})}
    with pytest.raises(NumericPathRefused, match=r"agreement 0\.9630 is below gates\.min_path_agreement=0\.99"):
        check_night_path(settings, "u2qt-v", contract, low, night)
    high = {PATHS_TAG: json.dumps({BF16: {"agreement": 0.995, "documents": 1200}})}
    assert check_night_path(settings, "u2qt-v", contract, high, night) == night
    assert check_night_path(settings, "u2qt-v", {}, {}, night) == night      # a bundle from before paths


def test_a_worker_whose_encoder_runs_another_path_refuses_and_spark_shows_one_line():
    from pipelines.config.settings import load_settings
    from pipelines.errors import NumericPathRefused
    from pipelines.night.inference import InputEmbedder, inference_spec, worker_error_from
    from u2qt_core.numeric_path import parse_path

    spec = inference_spec(load_settings(), tabular_sources=("tabular",), numeric_path=parse_path("cpu/fp32"))
    assert spec.encoder.device == "cpu" and spec.encoder.dtype == "float32" and spec.numeric_path == "cpu/fp32/eager"
    planned_elsewhere = type(spec)(**{**spec.__dict__, "numeric_path": BF16})   # the driver planned bf16 autocast
    with pytest.raises(NumericPathRefused, match=r"planned numeric path cpu/bf16-autocast/eager but this worker's "
                                                 r"encoder runs cpu/fp32/eager"):
        InputEmbedder(planned_elsewhere)
    wrapped = RuntimeError("[PYTHON_EXCEPTION] An exception was thrown from the Python worker:\nTraceback ...\n"
                           "pipelines.errors.NumericPathRefused: tokenizer u2qt-v: the driver planned numeric path "
                           "a but this worker's encoder runs b\n\tat org.apache.spark...")
    err = worker_error_from(wrapped)
    assert isinstance(err, NumericPathRefused) and str(err).endswith("encoder runs b")
    assert worker_error_from(RuntimeError("something else")) is None


# ---- Spark: a copy of the trained lake --------------------------------------------------------------

@pytest.fixture(scope="module")
def lake(spark, trained_lake, tmp_path_factory):
    """A copy of the trained lake (its version promoted) and the version's bundle path."""
    root = tmp_path_factory.mktemp("numeric-path")
    shutil.copytree(trained_lake["root"], root, dirs_exist_ok=True)
    return {"root": root, "version": trained_lake["summary"]["tokenizer_version"]}


def _settings(lake, **overrides):
    return make_settings(lake["root"] / "lake", lake["root"] / "model", **overrides)


def test_the_bundle_records_its_path_and_another_dtype_is_refused_before_inference(spark, lake):
    from pipelines.errors import NumericPathRefused, exit_code
    from pipelines.lake import tables
    from pipelines.night.day_run import open_run
    from pipelines.tokenizer import registry
    from u2qt_core.bundle import read_contract

    version = lake["version"]
    bundle = registry.find(_settings(lake), version).bundle
    assert read_contract(bundle)["numeric_path"] == {"device": "cpu", "precision": "fp32", "runtime": "eager"}
    assert open_run(spark, _settings(lake), "2026-01-05", run_id="fp32-night").tokenizer.numeric_path == "cpu/fp32/eager"

    changed = _settings(lake, encoder={"dtype": "bfloat16-autocast"})
    with pytest.raises(NumericPathRefused) as refused:
        open_run(spark, changed, "2026-01-05", run_id="bf16-night")
    message = str(refused.value)
    assert "\n" not in message and version in message and "cpu/fp32/eager" in message and BF16 in message
    assert exit_code(refused.value) == 2
    # refused before inference: nothing was staged, not even the run's resolve row
    assert not tables.table_exists(spark, Lake(spark, changed).path("staging_day_tokens"))
    resolved = Lake(spark, changed).read("run_metrics").where("run_id = 'bf16-night'").count()
    assert resolved == 0


@pytest.fixture(scope="module")
def evaluated(spark, lake):
    """``u2qt evaluate`` of the version with CPU bf16 autocast and int8 dynamic to validate."""
    from pipelines.tokenizer.promotion_gates import evaluate

    settings = _settings(lake, gates={"validate_paths": ["cpu/bf16-autocast", INT8], "path_sample_docs": 60})
    return evaluate(spark, settings, lake["version"])


def test_evaluate_measures_and_records_the_agreement_of_each_path(lake, evaluated):
    from pipelines.tokenizer import registry

    assert evaluated["numeric_path"] == "cpu/fp32/eager"
    paths = evaluated["numeric_paths"]
    assert set(paths) == {BF16, INT8}
    levels = 4                                          # conf/model/tiny.yaml: 2 shared + 2 specific
    for label, m in paths.items():
        assert m["documents"] > 20 and m["reference"] == "cpu/fp32/eager"
        assert len(m["per_level"]) == len(m["prefix"]) == levels
        assert all(0.0 <= v <= 1.0 for v in m["per_level"])
        assert m["prefix"] == sorted(m["prefix"], reverse=True) and m["prefix"][-1] == pytest.approx(m["agreement"])
        assert m["accepted"] == (m["agreement"] >= 0.99)
    # int8 moves vectors far more than bf16 autocast (README: half of int8's codes change)
    assert paths[INT8]["agreement"] < paths[BF16]["agreement"]
    assert paths[BF16]["per_level"][0] >= 0.9 and paths[INT8]["agreement"] < 0.99
    recorded = registry.path_agreements(registry.find(_settings(lake), lake["version"]).tags)
    assert recorded[BF16]["agreement"] == pytest.approx(paths[BF16]["agreement"])
    print("measured:", {k: (round(v["agreement"], 4), [round(x, 4) for x in v["per_level"]], v["documents"])
                        for k, v in paths.items()})


def test_a_validated_path_runs_and_one_below_the_bar_is_refused_with_its_agreement(spark, lake, evaluated):
    from pipelines.errors import NumericPathRefused
    from pipelines.night.stage import stage
    from pipelines.night.day_run import open_run

    bf16, int8 = evaluated["numeric_paths"][BF16]["agreement"], evaluated["numeric_paths"][INT8]["agreement"]
    with pytest.raises(NumericPathRefused, match=rf"{INT8}, whose measured full-tuple agreement {int8:.4f} is below"):
        open_run(spark, _settings(lake, encoder={"int8_dynamic": True}), "2026-01-05", run_id="int8-night")

    # the bar at (or under) bf16's measured agreement: the night runs on bf16 autocast, end to end through staging
    settings = _settings(lake, encoder={"dtype": "bfloat16-autocast"}, gates={"min_path_agreement": bf16})
    run = open_run(spark, settings, "2026-01-05", run_id="bf16-validated")
    assert run.tokenizer.numeric_path == BF16
    stage(run)
    staged = Lake(spark, settings).read("staging_day_tokens").where("run_id = 'bf16-validated'")
    assert staged.count() > 0
    assert {r[0] for r in staged.select("tokenizer_version").distinct().collect()} == {lake["version"]}
    resolve = Lake(spark, settings).read("run_metrics").where("run_id = 'bf16-validated' AND step = 'resolve'")
    assert '"numeric_path": "cpu/bf16-autocast/eager"' in resolve.first()["metrics_json"]
