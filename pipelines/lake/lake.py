"""The lake of one run: its Spark session, ``tables_root`` and the table generation it reads and
writes, resolved once; where every table of the catalogue (:mod:`pipelines.lake.tables`) lives,
reading it and creating it.

**Table generations.** Codes of two tokenizer versions are never mixed in one table
(``u2qt.vocab_version`` pins each). A *generation* is one copy of the tables the catalogue marks
``per_generation`` (the code tables): the first lives at ``<tables_root>/<name>`` (id ``""``), a
later one at ``<tables_root>/_generations/<version>/<name>``. The inputs (``raw_events``,
``user_profile``), ``quarantine``, ``run_metrics`` and the pointer are shared.

The Delta table ``<tables_root>/table_generations`` is the pointer: an append-only log whose
newest row names the *current* generation, the one analysts' views and the catalog read. A
switch is one appended row, i.e. one Delta commit: a reader sees the old generation or the new
one, never a mix; the old generation's tables stay where they are (readable by path) until
removed by hand.

A night writes into the generation of the tokenizer it resolved (:meth:`Lake.for_version`): the
current one when its version matches (or when there are no code tables yet), else the generation
named after its version, which ``u2qt retokenize`` fills and switches to
(:mod:`pipelines.tokenizer.retokenize`). Analysts' reads open the current one (:meth:`Lake.open`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.config.settings import PipelineSettings
from pipelines.lake import tables
from pipelines.lake.tables import TableSpec
from pipelines.runtime.local_rows import rows_frame
from u2qt_core.errors import U2QTError

log = logging.getLogger(__name__)

GENERATIONS_FOLDER = "_generations"


@dataclass(frozen=True)
class Generation:
    generation: str            # "" = the first generation's folders
    tokenizer_version: str | None


@dataclass(frozen=True)
class Lake:
    """The tables of one run: ``spark``, the configuration (``settings.tables_root``) and the
    table generation of the per-generation tables (``""``: the first). Built once per run with
    :meth:`open` (the current generation) or :meth:`for_version` (where a tokenizer's codes go).
    ``spark`` None: paths only (a sensor that reads a Delta log without Spark)."""

    spark: SparkSession | None
    settings: PipelineSettings
    generation: str = ""

    @classmethod
    def open(cls, spark: SparkSession, settings: PipelineSettings) -> "Lake":
        """The lake at the generation the pointer names (what analysts' views read)."""
        return cls(spark, settings).at(cls(spark, settings).current().generation)

    @classmethod
    def for_version(cls, spark: SparkSession, settings: PipelineSettings, tokenizer_version: str) -> "Lake":
        """The lake a run with ``tokenizer_version`` writes: the current generation if it holds that
        version's codes (or none yet), else the generation named after the version."""
        now = cls(spark, settings).current()
        return cls(spark, settings, now.generation if now.tokenizer_version in (None, tokenizer_version)
                   else tokenizer_version)

    def at(self, generation: str) -> "Lake":
        """The same lake on ``generation``'s code tables."""
        return replace(self, generation=generation)

    @property
    def root(self) -> Path:
        return Path(self.settings.tables_root).expanduser().absolute()

    @property
    def folder(self) -> Path:
        """Where this generation's code tables live."""
        return self.root / GENERATIONS_FOLDER / self.generation if self.generation else self.root

    def path(self, name: str) -> str:
        """Location of table ``name`` (a per-generation table: in this lake's generation)."""
        return str((self.folder if tables.spec(name).per_generation else self.root) / name)

    def exists(self, name: str) -> bool:
        return tables.table_exists(self.spark, self.path(name))

    def read(self, name: str) -> DataFrame:
        """The Delta table ``name`` (the ``user_token_history`` view: :func:`pipelines.lake.views.read_view`)."""
        path = self.path(name)
        if not tables.table_exists(self.spark, path):
            raise U2QTError(f"Delta table {name} does not exist at {path}")
        return self.spark.read.format("delta").load(path)

    def properties(self, name: str) -> dict[str, str]:
        return tables.table_properties(self.spark, self.path(name))

    def ensure(self, spec: TableSpec, tokenizer_version: str | None = None) -> str:
        """Create ``spec`` if missing; for tables holding codes check (or pin) the tokenizer version.

        Returns the table path. Raises :class:`TokenizerVersionMismatch` when the table was
        created for another tokenizer version."""
        from pipelines.lake.concurrency import retry_on_conflict

        path = self.path(spec.name)
        if not tables.table_exists(self.spark, path):
            # two runs may race to create it: the loser's conflict is retried and then finds the table
            retry_on_conflict(lambda: tables.create_table(self.spark, path, spec, tokenizer_version),
                              f"create {spec.name}")
        elif spec.versioned and tokenizer_version:
            tables.check_tokenizer_version(self.spark, spec.name, path, tokenizer_version)
        return path

    def create_all(self, tokenizer_version: str) -> list[str]:
        """Create every output table that is missing (``u2qt init-tables``, the DAG's first task), so
        runs of several dates started afterwards never race to create them. Returns their paths."""
        return [self.ensure(spec, tokenizer_version) for spec in tables.OUTPUT_TABLES]

    def check_versions(self, tokenizer_version: str) -> list[str]:
        """Check every existing output table that holds codes against ``tokenizer_version`` (the
        stage step calls it before inference, so a tokenizer of another version is refused in
        seconds, not at publish after the night's inference). Returns the names checked."""
        checked = []
        for spec in tables.OUTPUT_TABLES:
            path = self.path(spec.name)
            if spec.versioned and tables.table_exists(self.spark, path):
                tables.check_tokenizer_version(self.spark, spec.name, path, tokenizer_version)
                checked.append(spec.name)
        return checked

    # ---- the generation pointer ------------------------------------------------------------

    def current(self) -> Generation:
        """The generation the pointer names (before any switch: the first one, with its pinned version)."""
        if self.exists(tables.GENERATIONS.name):
            rows = self.read(tables.GENERATIONS.name).orderBy(F.col("switched_at").desc()).limit(1).collect()
            if rows:
                return Generation(rows[0]["generation"], rows[0]["tokenizer_version"])
        first = self.at("")
        pinned = (first.properties(tables.USER_DAY_TOKENS.name).get(tables.TOKENIZER_VERSION_PROPERTY)
                  if first.exists(tables.USER_DAY_TOKENS.name) else None)
        return Generation("", pinned)

    def switch(self, generation: str, tokenizer_version: str, dates: tuple[str, str] | None = None) -> None:
        """Make ``generation`` current: one appended row, one Delta commit."""
        spec = tables.GENERATIONS
        self.ensure(spec)
        first, last = (date.fromisoformat(dates[0]), date.fromisoformat(dates[1])) if dates else (None, None)
        fields = [f for f in spec.schema.fields if f.name != "switched_at"]
        (rows_frame(self.spark, [(generation, tokenizer_version, first, last)], T.StructType(fields))
            .withColumn("switched_at", F.current_timestamp())
            .write.format("delta").mode("append").save(self.path(spec.name)))
        log.info("table generation %r (tokenizer %s) is current", generation, tokenizer_version)

    def switches(self) -> list[dict]:
        """Every switch of the pointer, oldest first."""
        if not self.exists(tables.GENERATIONS.name):
            return []
        return [r.asDict() for r in self.read(tables.GENERATIONS.name).orderBy("switched_at").collect()]

    def generation_folders(self) -> list[Path]:
        """The folders of the generations after the first (``<tables_root>/_generations/<id>``)."""
        folder = self.root / GENERATIONS_FOLDER
        return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
