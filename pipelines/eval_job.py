"""``u2qt eval``: the benchmark world end to end (FOUNDv2 sections 5-6, appendix C).

1. write the evaluation world to Delta under ``settings.tables_root`` (skipped when the same
   world is already there);
2. build every (user, source, day) input of the history window with the training job's helpers
   and embed ALL of them once through the Spark encoder UDF; the embeddings (with their keys and
   documents) are cached in ``out_dir/cache`` under a key of the world, the sources and the
   encoder, so a re-run with the same world skips encoding;
3. train the main tokenizer (default 2 shared + 2 specific levels) on all embeddings and
   tokenize every user-day;
4. evaluate (:mod:`u2qt_core.evaluation`): linear probes of four user representations, the
   alignment pretext-task ablation, MaskNet CTR with and without user tokens, codebook-design
   and source ablations, storage of tokens vs float embeddings written with Spark/Delta;
5. write ``out_dir/report.md`` with figures and ``out_dir/results.json``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines import tables
from pipelines.settings import PipelineSettings
from pipelines.train_job import embed_inputs, preset_for, sample_inputs

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


# --------------------------------------------------------------------------- world + inputs
def _world_fingerprint(world_cfg) -> str:
    return json.dumps(world_cfg.model_dump(mode="json"), sort_keys=True)


def ensure_world(spark: SparkSession, settings: PipelineSettings, world_cfg, *, rewrite: bool = False) -> bool:
    """Write the world unless the same world (same config) is already at ``tables_root``.
    Returns True when it was written."""
    from pipelines.world import write_world

    root = Path(settings.tables_root).expanduser().absolute()
    marker = root / "_eval_world.json"
    fingerprint = _world_fingerprint(world_cfg)
    present = all(tables.table_exists(spark, str(root / name)) for name in
                  ("raw_events", "user_profile", "user_labels", "rec_impressions"))
    if not rewrite and present and marker.exists() and marker.read_text() == fingerprint:
        log.info("eval world already at %s (same config): not rewritten", root)
        return False
    write_world(spark, world_cfg, str(root))
    marker.write_text(fingerprint)
    return True


@dataclass
class EmbeddedInputs:
    """Every (user, source, day) model input of the history window, embedded.

    ``x[source]`` float32 [n, d] (text embedding or tabular feature vector), ``users[source]``
    int64 [n], ``days[source]`` int32 [n] (days since the world's start date); ``documents``
    a frame ``(user_id, day, source, document)`` of the text inputs.
    """

    x: dict[str, np.ndarray]
    users: dict[str, np.ndarray]
    days: dict[str, np.ndarray]
    documents: pd.DataFrame
    embed_seconds: float

    @property
    def rows(self) -> dict[str, int]:
        return {s: int(len(v)) for s, v in self.x.items()}


def _cache_key(settings: PipelineSettings, world_cfg) -> str:
    sources_text = Path(settings.resolve(settings.sources)).read_text()
    payload = json.dumps({"format": CACHE_FORMAT, "world": _world_fingerprint(world_cfg), "sources": sources_text,
                          "encoder": settings.encoder.model_dump(mode="json")}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def embed_all_inputs(spark: SparkSession, settings: PipelineSettings, world_cfg, cache_dir: Path,
                     tabular_sources: tuple[str, ...]) -> EmbeddedInputs:
    """All inputs of the world's history window, embedded once (cached in ``cache_dir``)."""
    key = _cache_key(settings, world_cfg)
    npz, docs_path = cache_dir / f"inputs-{key}.npz", cache_dir / f"documents-{key}.parquet"
    if npz.exists() and docs_path.exists():
        log.info("embeddings cache hit: %s", npz)
        data = np.load(npz)
        sources = sorted({name.split("__")[0] for name in data.files})
        return EmbeddedInputs(
            x={s: data[f"{s}__x"] for s in sources}, users={s: data[f"{s}__user"] for s in sources},
            days={s: data[f"{s}__day"] for s in sources}, documents=pd.read_parquet(docs_path),
            embed_seconds=float(json.loads((cache_dir / f"meta-{key}.json").read_text())["embed_seconds"]),
        )
    started = time.monotonic()
    everything = settings.model_copy(update={"training": settings.training.model_copy(update={"max_docs_per_source": 10**9})})
    inputs = sample_inputs(spark, everything, start_date=str(world_cfg.start_date),
                           end_date=str(world_cfg.end_date)).persist()
    keys = inputs.select("source", "user_id", "event_date", "document").orderBy("source", "user_id", "event_date").toPandas()
    log.info("embedding %d inputs (%s) through the Spark encoder UDF", len(keys), keys["source"].value_counts().to_dict())
    vectors = embed_inputs(spark, settings, inputs, tabular_sources)
    inputs.unpersist()
    start = pd.Timestamp(world_cfg.start_date)
    keys["day"] = (pd.to_datetime(keys["event_date"]) - start).dt.days.astype(np.int32)
    out = EmbeddedInputs(x={}, users={}, days={}, documents=pd.DataFrame(), embed_seconds=0.0)
    for source, group in keys.groupby("source", sort=True):
        x = vectors[source]
        if len(x) != len(group):
            raise RuntimeError(f"source {source}: {len(x)} embeddings for {len(group)} keys")
        out.x[source] = np.ascontiguousarray(x, dtype=np.float32)
        out.users[source] = group["user_id"].to_numpy(np.int64)
        out.days[source] = group["day"].to_numpy(np.int32)
    out.documents = keys.loc[keys["document"].notna(), ["user_id", "day", "source", "document"]].reset_index(drop=True)
    out.embed_seconds = time.monotonic() - started
    cache_dir.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for s in out.x:
        arrays.update({f"{s}__x": out.x[s], f"{s}__user": out.users[s], f"{s}__day": out.days[s]})
    np.savez(npz, **arrays)
    out.documents.to_parquet(docs_path, index=False)
    (cache_dir / f"meta-{key}.json").write_text(json.dumps({"embed_seconds": out.embed_seconds, "rows": out.rows}))
    log.info("embedded %s in %.0f s (cached at %s)", out.rows, out.embed_seconds, npz)
    return out


# --------------------------------------------------------------------------- lake reads
def read_labels(spark: SparkSession, settings: PipelineSettings, tasks: list[str]) -> pd.DataFrame:
    """``user_id`` x task 0/1 labels (one row per labelled user, sorted by user_id)."""
    frame = tables_frame(spark, settings, "user_labels").toPandas()
    wide = frame.pivot_table(index="user_id", columns="task", values="label", aggfunc="max")
    missing = [t for t in tasks if t not in wide.columns]
    if missing:
        raise ValueError(f"tasks {missing} have no labels in user_labels")
    return wide[tasks].astype(int).sort_index()


def tables_frame(spark: SparkSession, settings: PipelineSettings, name: str):
    return spark.read.format("delta").load(settings.table_path(name))


def future_descriptions(spark: SparkSession, settings: PipelineSettings, world_cfg, first_day: int,
                        user_ids: np.ndarray) -> list[str]:
    """FOUNDv2 eq. 13 template F over each user's events on history days ``>= first_day`` (time
    t2): one templated sentence per source the user was active on (bill: items, amount, most
    common payment status; other sources: items, event count, activity level)."""
    import re

    from u2qt_core.alignment import describe

    start = world_cfg.start_date + timedelta(days=first_day)
    events = (tables_frame(spark, settings, "raw_events")
              .where(F.col("event_date") >= F.lit(start)).where(F.col("event_date") <= F.lit(world_cfg.end_date))
              .where(F.col("user_id").isNotNull())
              .select("user_id", "source", "text", "amount", "status").toPandas())
    prefixes = re.compile(r"^(Alipay home > |Opened mini-program |Used app |search: )")

    def item_of(source: str, text: str) -> str:
        if source == "bill":
            match = re.search(r"for (.+?) at ", text) or re.search(r"to (.+?) \(", text)
            return match.group(1) if match else text[:60]
        return prefixes.sub("", text)[:60]

    texts: dict[int, list[str]] = {}
    for (user, source), group in events.groupby(["user_id", "source"], sort=True):
        items = [item_of(source, t) for t in group["text"]]
        top = pd.Series(items).value_counts().index[:3].tolist()
        if source == "bill":
            amount = float(group["amount"].fillna(0).sum())
            status = str(group["status"].fillna("success").mode().iloc[0])
        else:
            amount = float(len(group))
            status = "frequent" if len(group) >= 3 else "occasional"
        try:
            texts.setdefault(int(user), []).append(describe(source, top, amount, status))
        except Exception:  # an unknown source has no template: leave it out of the description
            continue
    return [" ".join(texts.get(int(u), ["The user had no recorded activity."])) for u in user_ids]


# --------------------------------------------------------------------------- tokenizers
@dataclass
class Tokenized:
    """A trained tokenizer and the codes of every input row it covers."""

    name: str
    model: object
    codes: dict[str, np.ndarray]
    metrics: dict
    seconds: float


def _preset(settings: PipelineSettings, cfg, encoder_dim: int, *, steps: int, mrqvae: dict | None = None,
            drop_source: str | None = None):
    """The evaluation's model preset via :func:`pipelines.train_job.preset_for` (sources and input
    widths from this pipeline), from ``cfg.tokenizer.preset`` + overrides, optionally without one source."""
    sources = settings.sources_config()
    overrides = {
        "mrqvae": {**cfg.tokenizer.overrides.get("mrqvae", {}), **(mrqvae or {})},
        "train": {**cfg.tokenizer.overrides.get("train", {}), "steps": steps, "seed": cfg.seed,
                  "checkpoint_every": 0, "log_every": max(steps // 4, 1)},
    }
    if drop_source:
        names = [s for s in sources.all_sources if s != drop_source]
        dims = {name: encoder_dim for name in sources.text_sources} | {sources.tabular.name: sources.tabular.width}
        overrides["mrqvae"].update(
            sources=names, input_dims={**{n: dims[n] for n in names}, drop_source: None},
            tabular_sources=[n for n in [sources.tabular.name] if n in names])
    eval_settings = settings.model_copy(
        update={"training": settings.training.model_copy(update={"preset": cfg.tokenizer.preset})})
    return preset_for(eval_settings, encoder_dim, overrides)


def train_tokenizer(name: str, embeddings: dict[str, np.ndarray], preset) -> Tokenized:
    """Train an MRQ-VAE on ``embeddings`` and tokenize every row."""
    import torch

    from u2qt_core.training import train_mrqvae

    started = time.monotonic()
    data = {s: x for s, x in embeddings.items() if s in preset.mrqvae.sources}
    result = train_mrqvae(data, preset, out_dir=None, progress=True)
    model = result.model.eval()
    codes = {}
    with torch.no_grad():
        for source, x in data.items():
            codes[source] = np.concatenate([model.quantize(torch.from_numpy(x[i:i + 4096]), source).numpy()
                                            for i in range(0, len(x), 4096)]).astype(np.int64)
    seconds = time.monotonic() - started
    log.info("tokenizer %s: %d steps in %.0f s", name, result.steps, seconds)
    return Tokenized(name=name, model=model, codes=codes, metrics=result.metrics, seconds=seconds)


def _num_codes(tok: Tokenized) -> int:
    return max(int(c.max()) for c in tok.codes.values()) + 1 if tok.codes else 1


# --------------------------------------------------------------------------- storage
def measure_storage(spark: SparkSession, folder: Path, *, user_ids: dict[str, np.ndarray], days: dict[str, np.ndarray],
                    codes: dict[str, np.ndarray], vectors: dict[str, np.ndarray], start_date: date) -> dict:
    """Write the token table ``(user_id, event_date, source, codes array<smallint>)`` and the
    float embeddings table ``(user_id, event_date, source, embedding array<float>)`` as Delta
    tables partitioned by ``event_date`` (the ``user_day_tokens`` layout) and measure them."""
    from u2qt_core.evaluation.storage import storage_comparison, table_size

    folder = Path(folder).absolute()
    if folder.exists():
        shutil.rmtree(folder)
    keys = []
    for source in sorted(codes):
        keys.append(pd.DataFrame({"user_id": user_ids[source], "day": days[source], "source": source}))
    frame = pd.concat(keys, ignore_index=True)
    frame["event_date"] = [start_date + timedelta(days=int(d)) for d in frame["day"]]
    frame = frame[["user_id", "event_date", "source"]]
    token_schema = T.StructType([T.StructField("user_id", T.LongType(), False), T.StructField("event_date", T.DateType(), False),
                                 T.StructField("source", T.StringType(), False), T.StructField("codes", T.ArrayType(T.ShortType()), False)])
    embed_schema = T.StructType([*token_schema.fields[:3], T.StructField("embedding", T.ArrayType(T.FloatType()), False)])
    token_frame = frame.assign(codes=[row.astype(np.int16) for s in sorted(codes) for row in codes[s]])
    embed_frame = frame.assign(embedding=[row.astype(np.float32) for s in sorted(vectors) for row in vectors[s]])
    user_days = int(frame[["user_id", "event_date"]].drop_duplicates().shape[0])
    sizes = {}
    for name, pdf, schema in (("tokens", token_frame, token_schema), ("embeddings", embed_frame, embed_schema)):
        path = str(folder / name)
        (spark.createDataFrame(pdf, schema=schema).write.format("delta").mode("overwrite")
         .partitionBy("event_date").save(path))
        rows = spark.read.format("delta").load(path).count()
        sizes[name] = table_size(path, user_days=user_days, rows=rows)
    result = storage_comparison(sizes["tokens"], sizes["embeddings"])
    result["layout"] = ("Both tables: one row per (user, source, day), columns user_id bigint, event_date date, "
                        "source string + `codes array<smallint>` or `embedding array<float>`, Delta (Parquet, "
                        "Spark's default snappy compression), partitioned by event_date like `user_day_tokens`. "
                        "Bytes per user-day = bytes / distinct (user_id, event_date).")
    return result


# --------------------------------------------------------------------------- alignment ablation
def alignment_ablation(spark: SparkSession, settings: PipelineSettings, world_cfg, cfg, main: Tokenized, *,
                       rows_user: dict[str, np.ndarray], days: dict[str, np.ndarray], user_ids: np.ndarray,
                       sources: list[str], encoder, cache_path: Path, probe) -> dict:
    """Train the alignment sequence model on the users' token histories with each pretext task
    set (FOUNDv2 table 5) and probe the fused user embeddings.

    Histories for training stop at day ``t1 = n_days - description_days - 1``; the semantic
    target of each user is the templated description (eq. 13) of their events on the days after
    t1 (time t2), embedded by the frozen text encoder. The probes embed the users' full
    histories. ``none`` is the same model without pre-training (random weights)."""
    import torch
    from tqdm.auto import tqdm

    from u2qt_core.alignment import AlignmentConfig, AlignmentTrainer
    from u2qt_core.evaluation.representations import ScaledCodebook, token_histories

    a = cfg.alignment
    n_users = len(user_ids)
    levels = next(iter(main.codes.values())).shape[1]
    cutoff = world_cfg.n_days - a.description_days - 1
    hist_args = dict(n_users=n_users, sources=sources, max_steps=a.max_steps_per_user)
    train_hist = token_histories(rows_user, days, main.codes, max_day=cutoff, **hist_args)
    full_hist = token_histories(rows_user, days, main.codes, **hist_args)
    active = np.flatnonzero(train_hist.mask.any(dim=1).numpy())
    if cache_path.exists():
        text_emb = np.load(cache_path)
    else:
        descriptions = future_descriptions(spark, settings, world_cfg, cutoff + 1, user_ids)
        log.info("encoding %d future-behaviour descriptions, e.g. %r", len(descriptions), descriptions[0][:200])
        text_emb = np.asarray(encoder.encode(descriptions), dtype=np.float32)
        np.save(cache_path, text_emb)
    scaled = ScaledCodebook(main.model, main.codes, target_rms=a.token_rms)
    log.info("alignment: codebook vectors scaled by %.1f to RMS %.1f", scaled.scale, a.token_rms)
    results = {}
    for task_set in tqdm(["none", *a.task_sets], desc="alignment task sets"):
        parts = set(task_set.split("+")) if task_set != "none" else set()
        acfg = AlignmentConfig(
            d_model=a.d_model, num_layers=a.num_layers, num_heads=a.num_heads, dropout=a.dropout,
            max_tokens=a.max_steps_per_user * levels, lr=a.lr, steps=a.steps if parts else 0,
            batch_size=a.batch_size, seed=cfg.seed, device="cpu", progress=False, log_every=max(a.steps // 3, 1),
            period=a.period, window_days=a.window_days,
            lambda_token=0.2 if "T" in parts else 0.0, lambda_window=0.4 if "W" in parts else 0.0,
            lambda_semantic=0.4 if "S" in parts else 0.0,
        )
        started = time.monotonic()
        trainer = AlignmentTrainer(scaled, train_hist.select(active), acfg,
                                   text_embeddings=text_emb[active] if "S" in parts else None)
        history = trainer.fit()
        with torch.no_grad():
            fused = trainer.embed_users(full_hist)
        results[task_set] = {
            "steps": acfg.steps, "final_loss": history[-1]["total"] if history else None,
            "train_seconds": round(time.monotonic() - started, 1), **probe(fused),
        }
        log.info("alignment %s: avg AUC %.4f KS %.4f (%.0f s)", task_set, results[task_set]["avg_auc"],
                 results[task_set]["avg_ks"], results[task_set]["train_seconds"])
    return results


# --------------------------------------------------------------------------- recommendation
def _qbins(values: pd.Series, n: int) -> np.ndarray:
    """Quantile bins 1..n (0 = missing)."""
    out = np.zeros(len(values), dtype=np.int64)
    ok = values.notna().to_numpy()
    if ok.any():
        ranks = values[ok].rank(method="first")
        out[ok] = pd.qcut(ranks, q=min(n, int(ok.sum())), labels=False).to_numpy(np.int64) + 1
    return out


def _categories(values: pd.Series) -> tuple[np.ndarray, int]:
    cat = pd.Categorical(values.astype("string").fillna("<na>"))
    return cat.codes.astype(np.int64), len(cat.categories)


def profile_fields(profiles: pd.DataFrame) -> tuple[np.ndarray, list[int], list[str]]:
    """User-profile fields of the CTR base model: one categorical index per field."""
    cols, sizes, names = [], [], []
    for name in ("age", "account_age_days", "avg_balance", "credit_score", "engagement"):
        cols.append(_qbins(profiles[name].astype("float64"), 8)); sizes.append(9); names.append(name)
    for name in ("gender", "city_tier", "device_os", "is_merchant"):
        codes, n = _categories(profiles[name]); cols.append(codes); sizes.append(n); names.append(name)
    cols.append(np.clip(profiles["num_cards"].fillna(0).to_numpy(np.int64), 0, 8)); sizes.append(9); names.append("num_cards")
    return np.stack(cols, axis=1), sizes, names


def recommendation(spark: SparkSession, settings: PipelineSettings, cfg, main: Tokenized, *,
                   rows_user: dict[str, np.ndarray], user_ids: np.ndarray, sources: list[str]) -> dict:
    """MaskNet CTR on ``rec_impressions`` (train = first ``rec_train_days`` days, valid/test = the
    stratified halves of the last days) with user-profile + item features, with and without the
    user tokens."""
    from u2qt_core.evaluation.masknet import CTRData, hit_rate_at_k, predict, train_masknet, user_token_bags

    m = cfg.masknet
    rec = tables_frame(spark, settings, "rec_impressions").toPandas()
    profiles = (tables_frame(spark, settings, "user_profile").toPandas()
                .sort_values(["user_id", "as_of"]).groupby("user_id").tail(1).set_index("user_id"))
    profiles = profiles.reindex(user_ids)
    user_fields, user_sizes, user_names = profile_fields(profiles.reset_index())
    pos = pd.Series(np.arange(len(user_ids)), index=user_ids)
    item_cat = rec.drop_duplicates("item_id").set_index("item_id")["item_category"]
    cat_codes = {c: i + 1 for i, c in enumerate(sorted(item_cat.unique()))}
    n_items = int(rec["item_id"].max()) + 1
    sizes = user_sizes + [n_items, len(cat_codes) + 1]

    def frame_data(frame: pd.DataFrame) -> CTRData:
        users = pos.reindex(frame["user_id"]).fillna(-1).to_numpy(np.int64)
        ufields = np.where(users[:, None] >= 0, user_fields[np.maximum(users, 0)], 0)
        items = frame["item_id"].to_numpy(np.int64)
        cats = frame["item_id"].map(item_cat).map(cat_codes).fillna(0).to_numpy(np.int64)
        fields = np.concatenate([ufields, items[:, None], cats[:, None]], axis=1)
        return CTRData(fields=fields, users=users, clicked=frame["clicked"].to_numpy(np.int64),
                       user_ids=frame["user_id"].to_numpy(np.int64))

    train, valid, test = (frame_data(rec[rec["split"] == s]) for s in ("train", "valid", "test"))
    # HR@k candidates: each test user's test impressions + sampled unshown catalogue items
    rng = np.random.default_rng(cfg.seed)
    test_rows = rec[rec["split"] == "test"]
    universe = np.sort(item_cat.index.to_numpy(np.int64))
    extra = []
    for user, group in test_rows.groupby("user_id"):
        if not group["clicked"].any() or not m.sampled_negatives:
            continue
        pool = np.setdiff1d(universe, group["item_id"].to_numpy())
        pick = rng.choice(pool, size=min(m.sampled_negatives, len(pool)), replace=False)
        extra.append(pd.DataFrame({"user_id": user, "item_id": pick, "clicked": 0}))
    clicked_users = test_rows.groupby("user_id")["clicked"].transform("max") > 0
    candidates = frame_data(pd.concat([test_rows.loc[clicked_users, ["user_id", "item_id", "clicked"]], *extra],
                                      ignore_index=True))
    levels = next(iter(main.codes.values())).shape[1]
    bags = user_token_bags(rows_user, main.codes, n_users=len(user_ids), sources=sources, max_bag=14)
    models = {}
    for key, label, use_tokens in (("profile", "User profile + item", False),
                                   ("profile+tokens", "(+) U2QT tokens", True)):
        started = time.monotonic()
        result = train_masknet(
            train, valid, sizes, bags=bags if use_tokens else None, token_vocab=_num_codes(main),
            embed_dim=m.embed_dim, num_blocks=m.num_blocks, block_dim=m.block_dim, reduction_ratio=m.reduction_ratio,
            epochs=m.epochs, batch_size=m.batch_size, lr=m.lr, weight_decay=m.weight_decay, seed=cfg.seed)
        scores = predict(result.model, test, bags if use_tokens else None)
        cand_scores = predict(result.model, candidates, bags if use_tokens else None)
        from sklearn.metrics import roc_auc_score

        entry = {"label": label, "test_auc": float(roc_auc_score(test.clicked, scores)),
                 "valid_auc": result.valid_auc, "best_epoch": result.best_epoch, "history": result.history,
                 "seconds": round(time.monotonic() - started, 1)}
        for k in m.hr_ks:
            entry[f"hr@{k}"] = hit_rate_at_k(candidates.user_ids, cand_scores, candidates.clicked, k)
        models[key] = entry
        log.info("masknet %s: test AUC %.4f %s", key, entry["test_auc"],
                 {f"hr@{k}": round(entry[f"hr@{k}"], 4) for k in m.hr_ks})
    n_users_hr = int(pd.Series(candidates.user_ids).nunique())
    return {
        "models": models, "hr_ks": list(m.hr_ks),
        "rows": {"train": len(train), "valid": len(valid), "test": len(test), "hr_candidates": len(candidates)},
        "protocol": (
            f"rec_impressions: train = first days ({len(train)} impressions), valid {len(valid)} / test {len(test)} = "
            f"stratified halves of the last days (the world's split). Base features: user profile "
            f"({', '.join(user_names)}; numeric ones as 8 quantile bins) + item_id + item_category. "
            f"(+) tokens adds one field per (source, level) = {len(sources)} x {levels} fields, each the mean "
            f"embedding of the codes the user got on their history days. Serial MaskNet, {m.num_blocks} blocks x "
            f"{m.block_dim}, k={m.embed_dim}, reduction ratio {m.reduction_ratio}, Adam lr {m.lr}, {m.epochs} epochs, "
            f"best epoch by valid AUC. AUC over test impressions. HR@k: for each of the {n_users_hr} test users "
            f"with a click, candidates = their test impressions + {m.sampled_negatives} sampled catalogue items "
            f"they were not shown; HR@k = share of their clicked items ranked in the top k, averaged over users."),
    }


# --------------------------------------------------------------------------- ablations
def token_features(tok: Tokenized, rows_user, n_users: int, sources: list[str], kind: str, bag_transform: str = "log1p"):
    """User features from a tokenizer's codes: ``bag`` of codes, or ``vectors`` = per source the
    mean over the user's days of the quantized vector (sum of the selected code vectors)."""
    import torch

    from u2qt_core.evaluation.representations import bag_of_codes, mean_embeddings

    present = [s for s in sources if s in tok.codes]
    if kind == "bag":
        return bag_of_codes(rows_user, tok.codes, n_users=n_users, sources=present, num_codes=_num_codes(tok),
                            transform=bag_transform)
    with torch.no_grad():
        vectors = {s: tok.model.decode_codes(torch.from_numpy(tok.codes[s]), s).numpy() for s in present}
    dim = tok.model.config.code_dim
    return mean_embeddings(rows_user, vectors, n_users=n_users, sources=present, dims={s: dim for s in present})


def _ablation_probe(tok: Tokenized, rows_user, n_users, sources, cfg, probe) -> dict:
    return probe(token_features(tok, rows_user, n_users, sources, cfg.ablations.representation, cfg.probe.bag_transform))


def codebook_ablation(settings, cfg, encoder_dim, embeddings, *, rows_user, n_users, sources, probe) -> tuple[list[dict], dict]:
    """Every configured codebook design trained for ``ablations.steps`` and probed
    (``ablations.representation``, C fixed per task).
    Returns the table rows and the trained tokenizers by design name."""
    from tqdm.auto import tqdm

    rows, trained = [], {}
    for design in tqdm(cfg.ablations.codebook_designs, desc="codebook designs"):
        preset = _preset(settings, cfg, encoder_dim, steps=cfg.ablations.steps, mrqvae={
            "variant": design.variant, "shared_levels": design.shared_levels, "specific_levels": design.specific_levels,
            "num_codes": design.num_codes, "code_dim": design.code_dim})
        tok = train_tokenizer(design.name, embeddings, preset)
        trained[design.name] = tok
        util = [e["utilization"] for e in tok.metrics["per_codebook"].values()]
        cos = [e["recon_cosine"] for e in tok.metrics["per_source"].values()]
        rows.append({"name": design.name, "volume": f"{design.num_codes}x{design.code_dim}",
                     "levels": design.shared_levels + design.specific_levels, "variant": design.variant,
                     "min_utilization": float(min(util)), "recon_cosine": float(np.mean(cos)),
                     "train_seconds": round(tok.seconds, 1),
                     **_ablation_probe(tok, rows_user, n_users, sources, cfg, probe)})
        log.info("design %s: avg AUC %.4f KS %.4f", design.name, rows[-1]["avg_auc"], rows[-1]["avg_ks"])
    return rows, trained


def source_ablation(settings, cfg, encoder_dim, embeddings, *, rows_user, n_users, sources, probe,
                    all_sources_row: dict | None) -> list[dict]:
    """Retrain the tokenizer without each source in turn and probe the tokens of the other sources."""
    from tqdm.auto import tqdm

    rows = []
    if all_sources_row is not None:
        rows.append({"name": "All sources", **{k: all_sources_row[k] for k in ("tasks", "avg_auc", "avg_ks", "dim")}})
    for source in tqdm(sources, desc="source ablation"):
        preset = _preset(settings, cfg, encoder_dim, steps=cfg.ablations.steps, drop_source=source)
        tok = train_tokenizer(f"without {source}", {s: x for s, x in embeddings.items() if s != source}, preset)
        rows.append({"name": f"(-) {source}", "train_seconds": round(tok.seconds, 1),
                     **_ablation_probe(tok, rows_user, n_users, [s for s in sources if s != source], cfg, probe)})
        log.info("without %s: avg AUC %.4f KS %.4f", source, rows[-1]["avg_auc"], rows[-1]["avg_ks"])
    return rows


def tsne_panels(designs: dict[str, Tokenized], embeddings: dict[str, np.ndarray], *, per_source: int,
                perplexity: float, seed: int) -> tuple[dict, dict]:
    """Per-source quantized embeddings (sum of the selected code vectors) of each design,
    ``per_source`` rows per source, in 2-D by t-SNE; also their silhouette by source (on the
    quantized vectors, cosine)."""
    import torch
    from sklearn.metrics import silhouette_score

    from u2qt_core.evaluation.report import tsne_2d

    rng = np.random.default_rng(seed)
    picks = {s: rng.choice(len(x), size=min(per_source, len(x)), replace=False) for s, x in embeddings.items()}
    panels, scores = {}, {}
    for title, tok in designs.items():
        vecs, labels = [], []
        with torch.no_grad():
            for source in sorted(picks):
                if source not in tok.codes:
                    continue
                codes = torch.from_numpy(tok.codes[source][picks[source]])
                vecs.append(tok.model.decode_codes(codes, source).numpy())
                labels += [source] * len(codes)
        x, labels = np.concatenate(vecs), np.asarray(labels)
        scores[title] = float(silhouette_score(x, labels, metric="cosine"))
        panels[title] = (tsne_2d(x, perplexity=perplexity, seed=seed), labels)
    return panels, scores


def pca_per_source(x: dict[str, np.ndarray], dims: int, seed: int) -> dict[str, np.ndarray]:
    """Each source's rows projected on its first ``dims`` principal components (sources with at
    most ``dims`` columns are kept as they are)."""
    from sklearn.decomposition import PCA

    return {s: (PCA(n_components=dims, random_state=seed).fit_transform(v) if v.shape[1] > dims else v)
            for s, v in x.items()}


# --------------------------------------------------------------------------- the command
def run_eval(spark: SparkSession, settings: PipelineSettings, *, world_config: Path, eval_config: Path,
             out_dir: Path) -> Path:
    """Benchmark world -> embeddings -> tokenizers -> probes, MaskNet, ablations, storage ->
    ``out_dir/report.md`` (returned) and ``out_dir/results.json``."""
    import torch
    from scipy import sparse

    from pipelines.world import load_world_config
    from u2qt_core.encoders.text import get_text_encoder
    from u2qt_core.evaluation.config import load_eval_config
    from u2qt_core.evaluation.probes import probe_tasks, split_users
    from u2qt_core.evaluation.report import plot_tsne, plot_utilization, render_report
    from u2qt_core.evaluation.representations import mean_embeddings, tfidf_features, user_documents

    started = time.monotonic()
    cfg = load_eval_config(eval_config)
    world_cfg = load_world_config(Path(world_config))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = out_dir / "cache"
    from threadpoolctl import threadpool_limits

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.torch_threads)
    blas_limits = threadpool_limits(cfg.torch_threads)  # BLAS threads busy-wait on a shared CPU too
    timings: dict[str, float] = {}
    notes: list[str] = []

    def lap(name: str, since: float) -> float:
        timings[name] = round(time.monotonic() - since, 1)
        return time.monotonic()

    try:
        t = time.monotonic()
        ensure_world(spark, settings, world_cfg, rewrite=cfg.rewrite_world)
        t = lap("world", t)
        sources_cfg = settings.sources_config()
        sources = sources_cfg.all_sources
        encoder = get_text_encoder(settings.encoder)
        key = _cache_key(settings, world_cfg)
        cached = (cache_dir / f"inputs-{key}.npz").exists()
        emb = embed_all_inputs(spark, settings, world_cfg, cache_dir, (sources_cfg.tabular.name,))
        t = lap("embed (cache hit)" if cached else "embed", t)

        labels = read_labels(spark, settings, cfg.tasks)
        user_ids = labels.index.to_numpy(np.int64)
        n_users = len(user_ids)
        pos = pd.Series(np.arange(n_users), index=user_ids)
        for s in list(emb.x):
            keep = pos.reindex(emb.users[s]).notna().to_numpy()
            if not keep.all():
                log.warning("source %s: %d rows of unlabelled users left out", s, int((~keep).sum()))
                emb.x[s], emb.users[s], emb.days[s] = emb.x[s][keep], emb.users[s][keep], emb.days[s][keep]
        rows_user = {s: pos.reindex(emb.users[s]).to_numpy(np.int64) for s in emb.x}
        y = {task: labels[task].to_numpy() for task in cfg.tasks}
        splits = {task: split_users(y[task], cfg.probe.test_size, cfg.seed) for task in cfg.tasks}
        p = cfg.probe

        def probe(features, c_by_task=None):
            return probe_tasks(features, y, splits, c_grid=p.c_grid, cv_folds=p.cv_folds, max_iter=p.max_iter,
                               seed=cfg.seed, c_by_task=c_by_task)

        # ---- main tokenizer
        main_preset = _preset(settings, cfg, encoder.dim, steps=cfg.tokenizer.steps)
        main = train_tokenizer("main", emb.x, main_preset)
        t = lap("main tokenizer", t)
        mc = main_preset.mrqvae
        tokenizer_desc = (f"{mc.variant} {mc.shared_levels} shared + {mc.specific_levels} specific levels, "
                          f"{mc.num_codes} codes x {mc.code_dim} dims, {cfg.tokenizer.steps} steps")

        # ---- representations
        reps: dict[str, dict] = {}
        reps["tokens_bag"] = {"label": "U2QT tokens: bag of codes",
                              **probe(token_features(main, rows_user, n_users, sources, "bag", p.bag_transform))}
        reps["tokens_vectors"] = {"label": "U2QT tokens: mean quantized (codebook) vector per source",
                                  **probe(token_features(main, rows_user, n_users, sources, "vectors"))}
        continuous = mean_embeddings(rows_user, emb.x, n_users=n_users, sources=sources,
                                     dims={s: emb.x[s].shape[1] for s in sources})
        reps["continuous"] = {"label": "Continuous encoder embeddings, mean per source (FOUND-style)", **probe(continuous)}
        reps["continuous_pca"] = {
            "label": f"Continuous embeddings, PCA to {mc.code_dim} dims per source, mean per source (control)",
            **probe(mean_embeddings(rows_user, pca_per_source(emb.x, mc.code_dim, cfg.seed), n_users=n_users,
                                    sources=sources, dims={s: min(mc.code_dim, emb.x[s].shape[1]) for s in sources}))}
        texts = user_documents(emb.documents, user_ids)
        tf = p.tfidf
        tfidf = tfidf_features(texts, max_features=tf.max_features, min_df=tf.min_df, ngram_max=tf.ngram_max,
                               sublinear_tf=tf.sublinear_tf)
        reps["tfidf"] = {"label": "Raw features: TF-IDF of the user's raw text", **probe(tfidf)}
        tab = sources_cfg.tabular.name
        profile_block = mean_embeddings(rows_user, {tab: emb.x[tab]}, n_users=n_users, sources=[tab],
                                        dims={tab: emb.x[tab].shape[1]})
        reps["tfidf_profile"] = {"label": "Raw features: TF-IDF + tabular profile features",
                                 **probe(sparse.hstack([tfidf, sparse.csr_matrix(profile_block)]).tocsr())}
        t = lap("probes", t)

        # ---- alignment (table 5)
        alignment = {}
        if cfg.alignment.enabled:
            alignment = alignment_ablation(
                spark, settings, world_cfg, cfg, main, rows_user=rows_user, days=emb.days, user_ids=user_ids,
                sources=sources, encoder=encoder, probe=probe,
                cache_path=cache_dir / f"descriptions-{key}-{cfg.alignment.description_days}.npy")
            best = "S+T+W" if "S+T+W" in alignment else cfg.alignment.task_sets[-1]
            reps["tokens_fused"] = {"label": f"U2QT tokens: alignment model fused embedding ({best})",
                                    **{k: alignment[best][k] for k in ("tasks", "avg_auc", "avg_ks", "dim")}}
            t = lap("alignment", t)

        # ---- recommendation (appendix C)
        rec = {}
        if cfg.masknet.enabled:
            rec = recommendation(spark, settings, cfg, main, rows_user=rows_user, user_ids=user_ids, sources=sources)
            t = lap("masknet", t)

        # ---- storage (table 6)
        storage = {}
        if cfg.storage:
            storage = measure_storage(spark, out_dir / "storage", user_ids=emb.users, days=emb.days, codes=main.codes,
                                      vectors={s: emb.x[s] for s in main.codes}, start_date=world_cfg.start_date)
            t = lap("storage", t)

        # ---- ablations (tables 3, 4)
        ref = reps["tokens_vectors" if cfg.ablations.representation == "vectors" else "tokens_bag"]
        fixed_c = {task: r["c"] for task, r in ref["tasks"].items()}

        def ablation_probe(features):
            return probe(features, c_by_task=fixed_c)

        designs, trained = codebook_ablation(settings, cfg, encoder.dim, emb.x, rows_user=rows_user, n_users=n_users,
                                             sources=sources, probe=ablation_probe)
        t = lap("codebook ablation", t)
        all_row = next((r for r in designs if r["variant"] == "multiview" and r["levels"] == mc.num_levels
                        and r["volume"] == f"{mc.num_codes}x{mc.code_dim}"), None)
        source_rows = []
        if cfg.ablations.drop_sources:
            source_rows = source_ablation(settings, cfg, encoder.dim, emb.x, rows_user=rows_user, n_users=n_users,
                                          sources=sources, probe=ablation_probe, all_sources_row=all_row)
            t = lap("source ablation", t)

        # ---- figures
        figures = {}
        fig = plot_utilization(main.metrics["per_codebook"], out_dir / "utilization_main.png",
                               title=f"Codebook utilization, main tokenizer\n({tokenizer_desc})")
        figures["Codebook utilization per level and codebook (FOUNDv2 figure 5)"] = fig.name
        shared_only = next((n for n, tk in trained.items() if tk.model.config.variant == "shared_only"), None)
        multiview = all_row["name"] if all_row else None
        silhouettes = {}
        if shared_only and multiview:
            panels, silhouettes = tsne_panels({shared_only: trained[shared_only], multiview: trained[multiview]}, emb.x,
                                              per_source=cfg.report.tsne_points_per_source,
                                              perplexity=cfg.report.tsne_perplexity, seed=cfg.seed)
            fig = plot_tsne(panels, out_dir / "tsne_sources.png", scores=silhouettes)
            figures["t-SNE of per-source quantized embeddings, shared-only vs shared+specific (FOUNDv2 figure 4)"] = fig.name
        t = lap("figures", t)

        # ---- results + report
        token_keys = [k for k in ("tokens_bag", "tokens_vectors", "tokens_fused") if k in reps]
        best_token = max(token_keys, key=lambda k: reps[k]["avg_auc"])
        gap = reps[best_token]["avg_auc"] - reps["continuous"]["avg_auc"]
        beats = [t_ for t_ in cfg.tasks if reps[best_token]["tasks"][t_]["auc"] > reps["tfidf"]["tasks"][t_]["auc"]]
        summary = {
            "best_token_representation": best_token, "avg_auc_gap_vs_continuous": gap,
            "within_0.01_of_continuous": bool(gap >= -0.01), "tasks_beating_tfidf": beats,
            "text": (f"Best token representation: {reps[best_token]['label']} — avg AUC "
                     f"{reps[best_token]['avg_auc']:.4f} vs continuous {reps['continuous']['avg_auc']:.4f} "
                     f"(gap {gap:+.4f}; target >= -0.01: {'met' if gap >= -0.01 else 'NOT met'}; best of the "
                f"{len(token_keys)} token representations); beats raw TF-IDF on "
                     f"{len(beats)}/{len(cfg.tasks)} tasks ({', '.join(beats) or 'none'}; target >= 3: "
                     f"{'met' if len(beats) >= 3 else 'NOT met'})."),
        }
        per_codebook = main.metrics["per_codebook"]
        results = {
            "meta": {"world_config": str(world_config), "eval_config": str(eval_config), "users": n_users,
                     "days": world_cfg.n_days, "inputs": emb.rows, "inputs_total": int(sum(emb.rows.values())),
                     "encoder": settings.encoder.model_path or "all-MiniLM-L6-v2 (mean pooling)",
                     "tokenizer": tokenizer_desc, "embed_seconds": emb.embed_seconds, "embed_cached": cached,
                     "label_rates": {task: float(np.mean(v)) for task, v in y.items()},
                     "wall_seconds": time.monotonic() - started},
            "tasks": list(cfg.tasks),
            "probe_protocol": (
                f"Probe protocol: per task one seeded stratified split of the {n_users} labelled users "
                f"({1 - p.test_size:.0%} train / {p.test_size:.0%} test, seed {cfg.seed}); features standardised on "
                f"the train users; L2 logistic regression with C in {p.c_grid} picked by {p.cv_folds}-fold "
                f"stratified CV on the train users; AUC = sklearn roc_auc_score, KS = scipy ks_2samp statistic "
                f"between positive and negative test scores. Users without any activity get all-zero features."),
            "representations": reps,
            "summary": summary,
            "alignment": alignment,
            "alignment_note": (
                f"Histories up to day {world_cfg.n_days - cfg.alignment.description_days} train the sequence model; "
                f"S aligns them with the frozen-encoder embedding of the templated description of each user's "
                f"last {cfg.alignment.description_days} history days (eq. 13-14), T is next-token prediction "
                f"(eqs. 10-11), W contrasts the user's two weeks (period {cfg.alignment.period} d, window "
                f"{cfg.alignment.window_days} d, eq. 12). Probes use the fused embedding of the full 14-day "
                f"history. 'none' = same model, random weights.") if alignment else "",
            "recommendation": rec,
            "storage": storage,
            "ablation_codebooks": designs,
            "ablation_note": (
                f"Each tokenizer trained {cfg.ablations.steps} steps on all embeddings, probed with the "
                f"'{cfg.ablations.representation}' token representation and C fixed per task to the value the main "
                f"probe of that representation picked ({fixed_c}). Volume = codes per codebook x code dim."),
            "ablation_sources": source_rows,
            "main_tokenizer_metrics": main.metrics,
            "tsne_silhouette_by_source": silhouettes,
            "codebook_metrics_summary": (
                "Main tokenizer utilization: " + ", ".join(f"{n} {e['utilization']:.2f}" for n, e in per_codebook.items())
                + ". Silhouette of the per-source quantized vectors by source (cosine): "
                + ", ".join(f"{k} {v:.3f}" for k, v in silhouettes.items()) + "."),
            "timings": timings,
            "notes": notes,
        }
        notes += _notes(results, cfg)
        results["meta"]["wall_seconds"] = time.monotonic() - started
        timings["total"] = round(results["meta"]["wall_seconds"], 1)
        (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=_json_default))
        report = out_dir / "report.md"
        report.write_text(render_report(results, figures))
        log.info("evaluation finished in %.0f s: %s", results["meta"]["wall_seconds"], report)
        return report
    finally:
        torch.set_num_threads(previous_threads)
        blas_limits.restore_original_limits()


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _notes(results: dict, cfg) -> list[str]:
    notes = [
        "Synthetic world: labels mix latent traits with behaviour in the 7 days after the history, so no "
        "representation reaches AUC 1; money_laundering has few positives (see label rates in results.json), "
        "its AUC/KS vary most between runs.",
        "Continuous and token representations both include the tabular source (tokens: its codes; "
        "continuous: its mean raw feature vector); TF-IDF sees only text, so 'TF-IDF + profile' is given as "
        "the like-for-like raw baseline.",
        f"Ablation tokenizers train for {cfg.ablations.steps} steps (main: {cfg.tokenizer.steps}) to fit the "
        "time budget; compare ablation rows with each other, not with the main table.",
        "The full-dimensional continuous baseline gives 1920 text dims and 13 tabular dims equal prior weight "
        "under standardisation + L2; the PCA control (same width per source as the token vectors) shows how "
        "much of the token advantage is that balance rather than quantisation.",
        f"Alignment: {cfg.alignment.steps} steps per task set on CPU; the fused embedding is a mean over the "
        "whole token sequence, which dilutes rare per-day signals (money_laundering) that per-source "
        "representations keep.",
    ]
    rec = results.get("recommendation", {}).get("models", {})
    if "profile" in rec and "profile+tokens" in rec:
        base, tok = rec["profile"], rec["profile+tokens"]
        notes.append(f"MaskNet: tokens change test AUC by {tok['test_auc'] - base['test_auc']:+.4f} and HR@10 by "
                     f"{tok['hr@10'] - base['hr@10']:+.4f} (one seed; the test split has "
                     f"{results['recommendation']['rows']['test']} impressions).")
    return notes
