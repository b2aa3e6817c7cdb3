"""Smoke runs of the benchmarks at tiny sizes: they run end to end and write the JSON layout the
summary relies on.  Timings are never asserted (the machine is shared)."""
from __future__ import annotations

import json

import pytest

from benchmarks import bench_model, bench_pipeline, run_all
from benchmarks.common import TrainedLake, load_bench_config, summarize, time_interleaved


@pytest.fixture(scope="module")
def quick_config():
    return load_bench_config(quick=True)


def test_quick_config_replaces_sizes(quick_config):
    full = load_bench_config()
    assert full["model"]["mrqvae"]["preset"] == "conf/model/default.yaml"
    assert full["model"]["mrqvae"]["batch_sizes"] == [256, 1024, 4096]
    assert quick_config["model"]["mrqvae"]["preset"] == "conf/model/tiny.yaml"
    presets = {k for k, v in quick_config["model"]["quality"]["presets"].items() if v}
    assert presets == {"tiny"}


def test_time_interleaved_rotates_and_counts():
    order: list[str] = []
    times = time_interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3, warmup=1)
    assert order[:2] == ["a", "b"]  # warm-up
    assert order[2:] == ["a", "b", "b", "a", "a", "b"]  # the order rotates every round
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    s = summarize(times["a"], 10, "rows")
    assert set(s) >= {"median_s", "repeats_s", "rows_per_s_median", "rows_per_s_all"}


def test_bench_model_mrqvae_and_encoder(quick_config, tmp_path):
    payload = bench_model.run(quick_config, tmp_path, only=["mrqvae", "encoder"])
    written = json.loads((tmp_path / "bench_model.json").read_text())
    assert written["benchmark"] == "bench_model"
    assert {"cpu_count", "torch", "device", "torch_threads_default"} <= set(written["machine"])
    mrq = written["sections"]["mrqvae"]
    assert mrq["initialised_codebooks"] == ["shared.1", "shared.2", "bill.3", "bill.4"]
    assert set(mrq["cpu"]) == {"cpu_threads1_batch8", "cpu_threads1_batch32"}
    for r in mrq["cpu"].values():
        assert len(r["repeats_s"]) == 2 and r["embeddings_per_s_median"] > 0
    enc = written["sections"]["encoder"]
    assert set(enc["results"]) == {"fixed16_threads1", "mixed_sorted_threads1", "mixed_unsorted_threads1"}
    assert "mixed_sorted_over_unsorted_threads1" in enc["ratios"]
    assert enc["mixed_set"]["padding_sorted"]["processed_tokens"] <= enc["mixed_set"]["padding_unsorted"]["processed_tokens"]
    assert abs(enc["fixed_length_sets"]["16"]["tokens_mean"] - 16) <= 2
    assert bench_model.summary_lines(payload)


def test_padding_stats_sorted_never_worse():
    lengths = [5, 40, 7, 33, 12, 9, 50, 3]
    sorted_ = bench_model.padding_stats(lengths, 3, True)
    unsorted = bench_model.padding_stats(lengths, 3, False)
    assert sorted_["real_tokens"] == unsorted["real_tokens"] == sum(lengths)
    assert sorted_["processed_tokens"] <= unsorted["processed_tokens"]


@pytest.fixture
def session_lake(trained_lake) -> TrainedLake:
    """The test session's trained tiny lake: the pipeline and inference smoke runs copy it
    instead of writing a world and training a tokenizer of their own."""
    return TrainedLake(trained_lake["root"], trained_lake["world"])


@pytest.mark.slow
def test_quality_and_pipeline_quick(quick_config, tmp_path, session_lake):
    """Spark: the tiny world through the quality benchmark and the whole nightly job (minutes)."""
    model = bench_model.run(quick_config, tmp_path / "out", only=["quality"], tmp_root=tmp_path / "q")
    quality = model["sections"]["quality"]["presets"]["tiny"]
    assert set(quality["utilization_per_codebook"]) >= {"shared.1", "shared.2", "bill.3", "tabular.4"}
    assert set(quality["collision_rate_per_source"]) >= {"bill", "tabular"}

    pipeline = bench_pipeline.run(quick_config, tmp_path / "out", tmp_root=tmp_path / "p", trained=session_lake)
    r = json.loads((tmp_path / "out" / "bench_pipeline.json").read_text())["results"]
    assert [d.get("rerun", False) for d in r["days"]] == [False, False, True]
    assert r["days"][0]["day_tokens_commit"]["operation"] == "WRITE"
    assert r["days"][-1]["steps"] == ["publish"]
    assert r["table_sizes"]["user_day_tokens"]["rows"] > 0 and r["bytes_per_token_row"] > 0
    assert r["days"][-1]["history_after"] == r["days"][-2]["history_after"]   # the re-run changed nothing
    summary = run_all.summarize(model, pipeline)
    md = run_all.markdown(summary)
    assert md.count("\n| Pipeline |") >= 5 and "| Quality (tiny) |" in md


@pytest.mark.slow
def test_scale_quick_history_and_total_users(quick_config, tmp_path):
    """Spark: the synthetic-history and total-users nights of bench_scale at tiny sizes."""
    from benchmarks import bench_scale

    bench_scale.run(quick_config, tmp_path / "out", tmp_root=tmp_path / "s", only=["history", "total_users"])
    r = json.loads((tmp_path / "out" / "bench_scale.json").read_text())["results"]
    assert [x["history_days"] for x in r["history"]["runs"]] == quick_config["scale"]["history_days"]
    for x in r["history"]["runs"] + r["total_users"]["runs"]:
        assert x["publish"]["bytes_written"] > 0 and x["publish"]["cpu_s"] > 0
        assert x["publish_metrics"]["history_rows_changed"] == x["active_users"] * 6
    assert r["total_users"]["runs"][-1]["stage_input_rows"] == r["total_users"]["runs"][0]["stage_input_rows"]
    assert "4x1_publish_bytes_written" in r["history"]["ratios"]


@pytest.mark.slow
def test_bench_inference_quick(quick_config, tmp_path, session_lake):
    """Spark: the tiny world through every section of the inference benchmark (minutes)."""
    from benchmarks import bench_inference

    payload = bench_inference.run(quick_config, tmp_path / "out", tmp_root=tmp_path / "i", trained=session_lake)
    r = json.loads((tmp_path / "out" / "bench_inference.json").read_text())["results"]
    assert r["documents"] > 0 and r["stage"]["result"]["token_rows"] >= r["documents"]
    assert set(r["spark_udf"]) == {"cold", "warm", "warm_again"}
    assert {"stage", "udf_body_arrow_batch", "spark_udf_warm"} <= set(r["ratios_vs_bare_encoder"])
    sizes = r["spark_udf_sizes"]       # the warm UDF at 1x / 2x the documents, one worker and side by side
    assert [x["docs"] for x in sizes["bare"]["runs"]] == [r["documents"], 2 * r["documents"]]
    for layout in ("one_worker", "side_by_side"):
        assert [x["docs"] for x in sizes[layout]["runs"]] == [r["documents"], 2 * r["documents"]]
        assert sizes[layout]["fit"]["cpu_s_per_doc"] != 0 and f"spark_udf_marginal_{layout}" in r["ratios_vs_bare_encoder"]
    assert sizes["one_worker"]["partitions"] == 1
    assert r["quantize"]["lean_equals_reference"] is True
    assert 0 <= r["int8"]["changed_codes_share"] <= 1 and set(r["int8"]["probe"]) >= {"fp32", "int8"}
    bf16 = r["bf16_autocast"]       # the GPU path's agreement, as `u2qt evaluate` measures it
    assert bf16["documents"] == r["documents"] and 0 <= bf16["agreement"] <= bf16["per_level"][0] <= 1
    assert r["padding"]["processed_tokens"] >= r["padding"]["real_tokens"]
    assert "stage_sizes" not in r  # not in the quick config: a world and a training more (~3 min)
    assert bench_inference.summary_lines(payload)


def test_bench_sequence_writes_both_growth_curves(quick_config, tmp_path):
    from benchmarks import bench_sequence

    bench_sequence.run(quick_config, str(tmp_path))
    written = json.loads((tmp_path / "bench_sequence.json").read_text())
    assert [r["users"] for r in written["by_users"]] == quick_config["sequence"]["users"]
    assert [r["steps"] for r in written["by_steps"]] == quick_config["sequence"]["steps"]
    assert all(r["cpu_s_median"] >= 0 and r["tokens_per_user"] == 4 * r["steps"] for r in written["by_steps"])
