"""The tokenizer's life cycle on the tiny world: bundles, registry, train -> evaluate -> promote,
and a night that keeps the version it resolved at its start.

One module-scoped copy of the trained lake holds a second training (another seed), so the
module trains once and runs one night."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import make_settings
from pipelines.lake.lake import Lake


@pytest.fixture(scope="module")
def lifecycle(spark, trained_lake, tmp_path_factory):
    """A copy of the trained lake (version 1 promoted, forced) plus a second training (seed 1)."""
    from pipelines.tokenizer.train_job import train

    root = tmp_path_factory.mktemp("lifecycle")
    shutil.copytree(trained_lake["root"], root, dirs_exist_ok=True)
    settings = make_settings(root / "lake", root / "model")
    second = train(spark, settings, preset_overrides={"train": {"seed": 1}})
    return {"settings": settings, "first": trained_lake["summary"], "second": second, "root": root}


def test_two_trainings_give_two_immutable_registered_bundles(lifecycle):
    from pipelines.tokenizer import registry
    from u2qt_core.bundle import load_bundle

    settings, first, second = lifecycle["settings"], lifecycle["first"], lifecycle["second"]
    assert first["tokenizer_version"] != second["tokenizer_version"]
    listed = registry.versions(settings)
    assert [v.tokenizer_version for v in listed] == [first["tokenizer_version"], second["tokenizer_version"]]
    assert [v.registry_version for v in listed] == ["1", "2"]
    for summary in (first, second):
        bundle = Path(summary["bundle"])
        assert bundle.name == summary["tokenizer_version"] and bundle.parent.name == "bundles"
        _, version, contract = load_bundle(bundle)
        assert version == summary["tokenizer_version"]
        assert contract["encoder"]["pooling"] == "mean" and contract["inputs"]["sources"][-1] == "tabular"
        assert not list(bundle.parent.glob(".tmp-*"))
    # training metrics are on the version's MLflow run
    run = registry.client(settings).get_run(listed[1].run_id)
    assert {"train.loss", "train.utilization_l1", "train.perplexity_l1", "train.collision_rate.bill"} <= set(run.data.metrics)
    # the alias still names the first version: a training promotes nothing
    assert registry.resolve(settings).tokenizer_version == first["tokenizer_version"]


def test_changed_encoder_setting_with_the_same_weights_is_refused(lifecycle):
    from pipelines.night.day_run import load_tokenizer_info
    from u2qt_core.bundle import ContractMismatch, load_bundle, write_bundle

    settings = lifecycle["settings"]
    changed = make_settings(Path(settings.tables_root), Path(settings.model_dir), encoder={"max_length": 128})
    with pytest.raises(ContractMismatch, match=r"encoder\.max_length = 256 .* have 128"):
        load_tokenizer_info(changed)
    # the same MRQ-VAE weights under another contract are another version
    model, version, contract = load_bundle(lifecycle["first"]["bundle"])
    other = {**contract, "encoder": {**contract["encoder"], "max_length": 128}}
    other_version, _ = write_bundle(model, lifecycle["root"] / "scratch", other)
    assert other_version != version
    assert load_tokenizer_info(settings).version == version


def test_promote_refuses_an_unevaluated_or_failing_version_and_a_night_keeps_its_version(spark, lifecycle, capsys):
    import json

    from pipelines.cli import main as cli

    from pipelines.tokenizer import registry
    from pipelines.night.day_run import open_run
    from pipelines.night.publish import publish
    from pipelines.night.quality import check_quality
    from pipelines.night.stage import stage

    settings, first, second = lifecycle["settings"], lifecycle["first"], lifecycle["second"]
    v1, v2 = first["tokenizer_version"], second["tokenizer_version"]
    with pytest.raises(registry.PromotionRefused, match="has not been evaluated"):
        registry.promote(settings, v2)
    with pytest.raises(SystemExit) as exit_info:     # `u2qt evaluate` exits 3 when a gate fails
        cli.run(["evaluate", v2, "--set", f"tables_root={settings.tables_root}", "--set", f"model_dir={settings.model_dir}",
                 "--set", "gates.max_reconstruction_error=1e-6"])
    printed = capsys.readouterr()
    assert exit_info.value.code == 3
    assert f"u2qt: tokenizer {v2} failed its gates: reconstruction_error = " in printed.err
    result = json.loads(printed.out[printed.out.index('{\n  "tokenizer_version"'):])
    assert result["heldout_dates"] == ["2026-01-06"] and not result["passed"]
    assert set(result["gates"]) == {"reconstruction_error", "min_level_utilization", "min_shared_coverage",
                                    "collision_rate", "probe_auc"}
    assert set(result["gates"]["min_shared_coverage"]["per_source"]) == set(result["rows"])
    assert not result["gates"]["reconstruction_error"]["passed"]
    # the held-out fidelity the nights' residual drift is judged against (the training sample's is in-sample)
    heldout = registry.heldout_residual(registry.find(settings, v2).tags)
    assert set(heldout) == set(result["rows"]) and all(0 < v < 1 for v in heldout.values()), heldout
    with pytest.raises(registry.PromotionRefused, match=r"reconstruction_error = .* \(needs <= 1e-06\)"):
        registry.promote(settings, v2)
    assert registry.resolve(settings).tokenizer_version == v1

    # a night starts with v1; v2 is promoted (forced, recorded) while it runs; it ends with v1
    run = open_run(spark, settings, "2026-01-05", run_id="night-before-promotion")
    assert run.tokenizer.version == v1
    stage(run)
    registry.promote(settings, v2, force=True, reason="test")
    assert registry.FORCED_TAG in registry.find(settings, v2).tags
    later = open_run(spark, settings, "2026-01-05", run_id="night-before-promotion")   # e.g. the next Airflow task
    assert later.tokenizer.version == v1
    check_quality(later)
    publish(later)
    written = {r[0] for r in run.read("user_day_tokens").select("tokenizer_version").distinct().collect()}
    assert written == {v1}
    resolved = run.read("run_metrics").where("run_id = 'night-before-promotion' AND step = 'resolve'").collect()
    assert [r["tokenizer_version"] for r in resolved] == [v1]
    # a night starting after the promotion resolves v2
    assert open_run(spark, settings, "2026-01-06", run_id="night-after").tokenizer.version == v2


def test_retokenize_builds_a_complete_generation_and_switches_atomically(spark, lifecycle, world_dates, capsys):
    from pipelines.lake import tables
    from pipelines.lake.lake import Generation
    from pipelines.cli.main import _register
    from pipelines.tokenizer.retokenize import IncompleteGeneration, _check_complete, retokenize

    settings, v1, v2 = lifecycle["settings"], lifecycle["first"]["tokenizer_version"], lifecycle["second"]["tokenizer_version"]
    lake = Lake(spark, settings)
    before = lake.current()
    assert before.generation == "" and before.tokenizer_version == v1   # the night above pinned the first tables
    old_days = lake.path("user_day_tokens")
    old_rows = spark.read.format("delta").load(old_days).count()

    result = retokenize(spark, settings, v2, world_dates[0], world_dates[-1])
    assert result["dates"] == {d: "ok" for d in world_dates} and result["previous_version"] == v1
    now = lake.current()
    assert now == Generation(v2, v2)
    pointer = lake.path("table_generations")
    assert spark.sql(f"DESCRIBE HISTORY delta.`{pointer}`").count() == 2   # created, then ONE commit switched
    new = lake.at(v2)
    days = new.read("user_day_tokens")
    assert sorted({str(r["event_date"]) for r in days.select("event_date").collect()}) == world_dates
    assert {r[0] for r in days.select("tokenizer_version").distinct().collect()} == {v2}
    assert new.properties("user_day_tokens")[tables.TOKENIZER_VERSION_PROPERTY] == v2
    # the analysts' views follow the pointer; the old generation stays readable by path
    _register(spark, settings)
    assert {r[0] for r in spark.sql("SELECT DISTINCT tokenizer_version FROM user_token_history").collect()} == {v2}
    assert {r[0] for r in spark.sql("SELECT DISTINCT tokenizer_version FROM user_day_token_strings").collect()} == {v2}
    assert spark.read.format("delta").load(old_days).count() == old_rows
    # `u2qt tables` shows the current generation's tables
    from pipelines.cli import main as cli

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["tables", "--set", f"tables_root={settings.tables_root}", "--set", f"model_dir={settings.model_dir}"])
    shown = capsys.readouterr().out
    assert exit_info.value.code == 0 and f"generation {v2}: tokenizer {v2}" in shown
    assert new.path("user_day_tokens") in shown and lake.path("raw_events") in shown and old_days not in shown
    # a generation missing a date is never switched to
    with pytest.raises(IncompleteGeneration, match="no rows for \\['2026-02-01'\\]"):
        _check_complete(new, v2, [*world_dates, "2026-02-01"])
