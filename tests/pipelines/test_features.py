"""Your own sources, config only: a world whose two text sources and tabular source are named
unlike the shipped ones (a sources file of its own, a world renaming what it writes) is trained,
promoted, tokenized for two nights and turned into ``user_features`` with no code change. The
features are checked against a recomputation on the driver with the tokenizer's own decode_codes
and scikit-learn's TfidfTransformer (not the job's code path)."""
from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from pyspark.sql import functions as F
from sklearn.feature_extraction.text import TfidfTransformer

from pipelines.night.day_run import open_run
from pipelines.features.user_features import build_features, feature_tensors
from pipelines.lake.lake import Lake
from tests.conftest import TINY_WORLD, dates_of, make_settings
from u2qt_core.bundle import load_bundle

OWN_SOURCES = """
text_sources:
  payments: {label: "Payments", instruction: "Extract text features of the user's payments"}
  queries: {label: "Queries", instruction: "Extract text features of the user's search queries"}
tabular:
  name: account
  features:
    - {column: age, transform: scale, divisor: 100.0, range: [0, 130]}
    - {column: credit_score, transform: scale, divisor: 1000.0, range: [0, 1000]}
    - {column: device_os, transform: onehot, values: ["ios", "android", "harmonyos"]}
"""


def _expected(spark, settings, as_of: str, half_life: float):
    """{user_id: (codebook_vectors [S*D], {column: value})} recomputed from user_day_tokens."""
    run = open_run(spark, settings, as_of, run_id=f"expect-{as_of}")
    model, _, _ = load_bundle(run.tokenizer.model_dir)
    cfg = model.config
    S, L, D, size = len(cfg.sources), cfg.num_levels, cfg.code_dim, cfg.code_table_size
    rows = (run.lake.read("user_day_tokens")
            .where(F.col("event_date") <= as_of).collect())
    users = sorted({r["user_id"] for r in rows})
    position = {u: i for i, u in enumerate(users)}
    sums = np.zeros((len(users), S * D))
    totals = np.zeros((len(users), S))
    tf = np.zeros((len(users), S * L * size))
    for r in rows:
        s = cfg.sources.index(r["source"])
        w = 0.5 ** ((date.fromisoformat(as_of) - r["event_date"]).days / half_life)
        with torch.no_grad():
            z = model.decode_codes(torch.tensor([list(r["codes"])]), r["source"])[0].numpy()
        i = position[r["user_id"]]
        sums[i, s * D:(s + 1) * D] += w * z
        totals[i, s] += w
        for level, code in enumerate(r["codes"]):
            tf[i, (s * L + level) * size + code] += w
    means = sums / np.repeat(np.maximum(totals, 1e-300), D, axis=1)
    bag = TfidfTransformer(norm="l2", smooth_idf=True).fit_transform(tf).toarray()
    return users, means, bag, S * L * size


@pytest.fixture(scope="module")
def own_lake(spark, tmp_path_factory):
    """Two published nights of a world with sources ``payments``, ``queries`` and ``account``."""
    from pipelines.night.daily_job import run_day
    from pipelines.tokenizer.registry import promote
    from pipelines.tokenizer.train_job import train
    from pipelines.world import load_world_config, write_world

    root = tmp_path_factory.mktemp("own-sources")
    (root / "sources.yaml").write_text(OWN_SOURCES)
    settings = make_settings(root / "lake", root / "model", sources=str(root / "sources.yaml"),
                             features={"window_days": 7, "half_life_days": 1.0})
    world = load_world_config(TINY_WORLD, {"source_weights": {"bill": 0.5, "search": 0.5},
                                           "source_names": {"bill": "payments", "search": "queries"}})
    write_world(spark, world, settings.tables_root)
    promote(settings, train(spark, settings)["tokenizer_version"], force=True, reason="test")
    dates = dates_of(world)
    for day in dates:
        run_day(spark, settings, day, run_id=f"own-{day}")
    return settings, dates


@pytest.fixture(scope="module")
def featured(spark, own_lake):
    settings, dates = own_lake
    metrics = build_features(open_run(spark, settings, dates[-1], run_id="features-test"))
    return settings, dates[-1], metrics


def test_own_sources_are_tokenized_and_featured_from_config_alone(spark, featured):
    settings, as_of, metrics = featured
    model, _, _ = load_bundle(open_run(spark, settings, as_of, run_id="look").tokenizer.model_dir)
    assert model.config.sources == ["payments", "queries", "account"]
    assert model.config.input_dims["account"] == 5
    written = {r["source"] for r in Lake(spark, settings).read("user_day_tokens").select("source").distinct().collect()}
    assert written == {"payments", "queries", "account"}
    present = {s for r in Lake(spark, settings).read("user_features").select("sources_present").collect()
               for s in r["sources_present"]}
    assert present == written and metrics["bag_size"] == 3 * model.config.num_levels * model.config.code_table_size


def test_features_match_a_driver_side_recomputation(spark, featured):
    """Read as the README shows (pandas, then feature_tensors), compared with the recomputation."""
    settings, as_of, metrics = featured
    users, means, bag, bag_size = _expected(spark, settings, as_of, half_life=1.0)
    rows = (Lake(spark, settings).read("user_features").where(F.col("as_of") == as_of)
            .orderBy("user_id").toPandas())
    loaded = feature_tensors(rows)
    assert loaded.user_ids.tolist() == users and metrics["active_users"] == len(users)
    assert set(rows["bag_size"]) == {bag_size} and loaded.bags.shape == (len(users), bag_size)
    np.testing.assert_allclose(loaded.vectors.numpy(), means, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(loaded.bags.to_dense().numpy(), bag, rtol=1e-4, atol=1e-6)
    assert all(list(indices) == sorted(indices) for indices in rows["bag_indices"])


def test_a_rerun_replaces_the_as_of_date_and_only_chosen_columns_are_filled(spark, featured):
    settings, as_of, _ = featured
    bag_only = settings.model_copy(update={"features": settings.features.model_copy(
        update={"representations": ["bag_of_codes"]})})
    before = Lake(spark, settings).read("user_features").where(F.col("as_of") == as_of).count()
    build_features(open_run(spark, bag_only, as_of, run_id="features-rerun"))
    rows = Lake(spark, settings).read("user_features").where(F.col("as_of") == as_of)
    assert rows.count() == before
    assert rows.where(F.col("codebook_vectors").isNotNull()).count() == 0
    assert rows.where(F.size("bag_indices") > 0).count() == before
    recorded = Lake(spark, settings).read("run_metrics").where("step = 'features'").count()
    assert recorded == 2


def _fused_by_hand(spark, settings, as_of: str, folder) -> tuple[list[int], np.ndarray]:
    """Fused embeddings recomputed on the driver: histories from a plain collect, the bundle's own
    codes_to_vectors (not the job's numpy codebook tables), one user at a time."""
    import json

    from u2qt_core.alignment import UserSequenceConfig, UserSequenceModel

    meta = json.loads((folder / "config.json").read_text())
    model = UserSequenceModel(UserSequenceConfig(**meta["model"])).eval()
    model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    run = open_run(spark, settings, as_of, run_id=f"expect-{as_of}")
    tokenizer, _, _ = load_bundle(run.tokenizer.model_dir)
    first = date.fromisoformat(as_of) - timedelta(days=settings.features.window_days - 1)
    rows = (run.lake.read("user_day_tokens")
            .where(F.col("event_date").between(first, date.fromisoformat(as_of))).collect())
    sources = tokenizer.config.sources
    by_user: dict[int, list] = {}
    for r in rows:
        by_user.setdefault(r["user_id"], []).append((r["event_date"], sources.index(r["source"]), r["source"], r["codes"]))
    users, fused = sorted(by_user), []
    for user in users:
        steps = sorted(by_user[user], key=lambda step: (step[0], step[1]))[-meta["max_steps"]:]
        with torch.no_grad():
            vectors = torch.stack([tokenizer.codes_to_vectors(torch.tensor([list(codes)]), source)[0]
                                   for _, _, source, codes in steps]) * meta["scale"]
            out = model(vectors[None], torch.tensor([[s for _, s, _, _ in steps]]), torch.ones(1, len(steps), dtype=torch.bool))
        fused.append(out.fused[0].numpy())
    return users, np.stack(fused)


def test_sequence_encoder_trains_from_delta_and_fills_fused_embeddings(spark, own_lake, tmp_path):
    """`u2qt train-sequence` then the features job's fused_embedding column, against the driver."""
    from pipelines.features.sequence_encoder import _sampled_rows, encoder_path, train_sequence_encoder
    from u2qt_core.alignment.codebooks import CodebookTables
    from u2qt_core.errors import CheckpointError

    settings, dates = own_lake
    as_of = dates[-1]
    (tmp_path / "sequence.yaml").write_text(
        "d_model: 16\nnum_layers: 1\nnum_heads: 2\ndropout: 0.0\nmax_tokens: 64\nsteps: 40\nbatch_size: 16\n"
        "lr: 3.0e-3\nwindow_days: 1\nperiod: 2\nlambda_semantic: 0.0\ndevice: cpu\n")
    settings = settings.model_copy(update={
        "sequence_encoder": settings.sequence_encoder.model_copy(update={"model": str(tmp_path / "sequence.yaml"),
                                                                         "max_steps": 8}),
        "features": settings.features.model_copy(update={"representations": ["fused_embedding"]})})
    look = open_run(spark, settings, as_of, run_id="look").tokenizer
    version, code_dim = look.version, load_bundle(look.model_dir)[0].config.code_dim
    with pytest.raises(CheckpointError, match="train-sequence"):
        build_features(open_run(spark, settings, as_of, run_id="fused-missing"))

    # the hash sample: at most max_users users, each with all its rows of the window
    small = settings.model_copy(update={"sequence_encoder": settings.sequence_encoder.model_copy(update={"max_users": 5})})
    run = open_run(spark, small, as_of, run_id="sample-test")
    sample, active = _sampled_rows(run, CodebookTables(load_bundle(look.model_dir)[0]))
    window = Lake(spark, settings).read("user_day_tokens").where(F.col("event_date") <= as_of)
    exact = window.select("user_id").distinct().count()
    assert abs(active - exact) <= max(1, 0.05 * exact) and 1 <= sample["user_id"].nunique() <= 5
    per_user = window.where(F.col("user_id").isin(sample["user_id"].unique().tolist())).groupBy("user_id").count().toPandas()
    assert sample.groupby("user_id").size().sort_index().tolist() == per_user.set_index("user_id")["count"].sort_index().tolist()

    metrics = train_sequence_encoder(open_run(spark, settings, as_of, run_id="train-sequence-test"))
    assert metrics["users"] == exact > 2 and metrics["fused_dim"] == 3 * code_dim + 16  # codes_with_summary
    assert metrics["loss_after"]["token"] < metrics["loss_before"]["token"]

    build_features(open_run(spark, settings, as_of, run_id="features-fused"))
    rows = (Lake(spark, settings).read("user_features").where(F.col("as_of") == as_of)
            .orderBy("user_id").toPandas())
    assert rows["codebook_vectors"].isna().all() and rows["bag_indices"].isna().all()
    users, fused = _fused_by_hand(spark, settings, as_of, encoder_path(settings.model_dir, version))
    assert rows["user_id"].tolist() == users
    np.testing.assert_allclose(np.stack(rows["fused_embedding"].to_numpy()), fused, rtol=1e-4, atol=1e-5)


# ---- the README's examples, run as written --------------------------------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_block(language: str, section: str) -> str:
    """The first ```language block after the heading ``section`` of the README."""
    text = README.read_text()
    start = text.index(section)
    match = re.search(rf"```{language}\n(.*?)```", text[start:], re.S)
    assert match, f"no {language} block after {section!r} in README.md"
    return match.group(1)


def test_readme_pytorch_snippet_runs_as_written(spark, featured, monkeypatch):
    """The README's "Loading one as-of date into PyTorch" block, executed unchanged except that
    ``load_settings()`` gives this lake's settings (as_of 2026-01-06 is the tiny world's last day)."""
    import pipelines.config.settings as settings_module

    settings, as_of, _ = featured
    assert as_of == "2026-01-06"
    monkeypatch.setattr(settings_module, "load_settings", lambda *a, **k: settings)
    namespace: dict = {}
    exec(compile(_readme_block("python", "Loading one as-of date into PyTorch"), "README.md", "exec"), namespace)
    features = namespace["features"]
    expected = feature_tensors(Lake(spark, settings).read("user_features")
                               .where(F.col("as_of") == as_of).orderBy("user_id").toPandas())
    assert features.user_ids.tolist() == expected.user_ids.tolist() and len(features.user_ids) > 0
    # the module's earlier tests may have rewritten the date with fewer representations: compare what is there
    for got, want in ((features.vectors, expected.vectors), (features.bags, expected.bags)):
        assert (got is None) == (want is None)
        if want is not None:
            np.testing.assert_array_equal(got.to_dense().numpy() if got.is_sparse else got.numpy(),
                                          want.to_dense().numpy() if want.is_sparse else want.numpy())


def test_readme_sql_examples_run_against_the_views(spark, featured):
    """Every statement of the README's "Example Spark SQL" block resolves and runs over the views
    ``u2qt sql`` registers (the README cannot name a column or view the tables lack)."""
    from pipelines.cli.main import _register

    settings, _, _ = featured
    registered = _register(spark, settings)
    assert {"user_day_token_strings", "user_token_history", "user_identity", "user_features"} <= set(registered)
    block = _readme_block("sql", "## Example Spark SQL")
    statements = [s.strip() for s in re.sub(r"--[^\n]*", "", block).split(";") if s.strip()]
    assert len(statements) >= 7
    for statement in statements:
        spark.sql(statement).collect()
