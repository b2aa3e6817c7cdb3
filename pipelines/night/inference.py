"""Encoder + MRQ-VAE inference inside Spark: an iterator pandas UDF whose worker loads the
models once and keeps them for every later batch and task it runs.

Rows are ``(user_id, event_date, source, document, features)``: text sources carry a document
that the LLM text encoder embeds (with that source's instruction when the encoder uses last-token
pooling), the tabular source carries a feature vector for the MRQ-VAE's tabular MLP. The UDF
returns the ``L`` codes of each row (``array<smallint>``), for a text row its tokens and the
tokens truncation to ``encoder.max_length`` cut (what the gates step counts per source), and the
row's relative residual norm ``||r^{L+1}|| / ||z||`` (the quality step's fidelity).

Batching: Spark hands the UDF Arrow batches of ``spark.sql.execution.arrow.maxRecordsPerBatch``
rows (cut further into chunks of ``inference.batch_rows``).  All text rows of a chunk that share
an instruction -- every text row under mean pooling -- go to the encoder in one call, so one
length sort spans the chunk; the encoder sizes its forward passes in tokens
(``encoder.max_batch_tokens``) and pads each text to its own length bucket, so a row's codes do
not depend on which rows share its batch.  The MRQ-VAE then quantizes each source's rows at once
with its lean :meth:`MRQVAE.quantize`.

Numeric path: the spec's encoder config is pinned to the path the driver resolved
(:mod:`pipelines.night.numeric_path`), and a worker whose encoder would compute on another path
refuses to start (:class:`~pipelines.errors.NumericPathRefused`) rather than write other codes.

Errors: a chunk that fails is split in halves until one row fails alone; the error then names
that row's user, source and date (``InferenceRowError``).
"""
from __future__ import annotations

import json

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, NamedTuple

import numpy as np
import pandas as pd

from u2qt_core.encoders.text import TextEncoderConfig, get_text_encoder
from u2qt_core.errors import CheckpointError, InputError
from pipelines.errors import InferenceRowError, NumericPathRefused

if TYPE_CHECKING:
    from pipelines.config.settings import PipelineSettings
    from u2qt_core.numeric_path import NumericPath

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferenceSpec:
    """Everything a worker needs to rebuild the models; small and picklable."""

    model_dir: str
    tokenizer_version: str
    encoder: TextEncoderConfig            # pinned to numeric_path (no device/dtype "auto")
    instructions: dict[str, str]          # text source -> instruction (used by last-token pooling)
    tabular_sources: tuple[str, ...]
    batch_rows: int = 4096
    torch_threads: int = 1                # intra-op threads per Python worker (match spark.task.cpus)
    numeric_path: str = ""                # the path the driver planned (device/precision/runtime)
    labels: tuple[tuple[str, str], ...] = ()   # text source -> document label (U²QT-AAAI splits documents into lines)
    line_separator: str = " [*] "


def inference_spec(settings: "PipelineSettings", *, tabular_sources: tuple[str, ...],
                   model_dir: str = "", tokenizer_version: str = "",
                   numeric_path: "NumericPath | None" = None) -> InferenceSpec:
    """The spec the pipeline's settings describe (per-source instructions from ``sources.yaml``).
    ``model_dir`` / ``tokenizer_version`` stay empty for embedding-only UDFs. The encoder is
    pinned to ``numeric_path`` (default: the path the settings resolve to, :func:`planned_path`)."""
    from pipelines.night.numeric_path import pinned_encoder, planned_path

    sources = settings.sources_config()
    path = numeric_path if numeric_path is not None else planned_path(settings)
    return InferenceSpec(
        model_dir=model_dir,
        tokenizer_version=tokenizer_version,
        encoder=pinned_encoder(settings.encoder, path),
        numeric_path=path.label,
        instructions={name: src.instruction for name, src in sources.text_sources.items()},
        labels=tuple((name, src.label) for name, src in sources.text_sources.items()),
        line_separator=sources.document.line_separator,
        tabular_sources=tabular_sources,
        batch_rows=settings.inference.batch_rows,
        torch_threads=settings.inference.torch_threads,
    )


def _spec_key(spec: InferenceSpec) -> str:
    """What a cached embedder / runtime is built from: the embedder also keeps the text sources'
    instructions and the tabular sources, so two sources configs served by one reused Python
    worker (an embedding-only spec has no model_dir or version) never share one."""
    return "|".join([spec.model_dir, spec.tokenizer_version, spec.encoder.model_dump_json(),
                     json.dumps(spec.instructions, sort_keys=True), ",".join(spec.tabular_sources)])


class InputEmbedder:
    """Builds MRQ-VAE inputs: text rows through the LLM encoder, tabular rows as they are."""

    def __init__(self, spec: InferenceSpec) -> None:
        import torch

        if spec.torch_threads > 0:
            # every Spark task owns spark.task.cpus cores; torch's default (all cores) oversubscribes them
            torch.set_num_threads(spec.torch_threads)
        self.spec = spec
        self.encoder = get_text_encoder(spec.encoder)
        if spec.numeric_path and self.encoder.numeric_path.label != spec.numeric_path:
            raise NumericPathRefused(
                f"tokenizer {spec.tokenizer_version or '(embedding only)'}: the driver planned numeric path "
                f"{spec.numeric_path} but this worker's encoder runs {self.encoder.numeric_path}")

    def instruction(self, source: str) -> str | None:
        """The prompt instruction of a text source (``None`` under mean pooling: none is used)."""
        if source not in self.spec.instructions:
            raise InputError(f"unknown source {source!r}; known: {sorted(self.spec.instructions)}")
        return self.spec.instructions[source] if self.spec.encoder.pooling == "last_token" else None

    def embed(self, sources: np.ndarray, documents: np.ndarray, features: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Group rows by source: ``{source: (row_positions [n], inputs float32 [n, input_dim])}``
        (:meth:`embed_counted` without the token counts)."""
        return {source: (rows.positions, rows.inputs) for source, rows in self.embed_counted(sources, documents, features).items()}

    def embed_counted(self, sources: np.ndarray, documents: np.ndarray, features: np.ndarray) -> dict[str, "SourceRows"]:
        """Group rows by source, with each text row's tokens and the tokens truncation cut.

        Text rows sharing an instruction are encoded in ONE call (one length sort across them);
        under mean pooling that is every text row of the chunk."""
        groups: dict[str, SourceRows] = {}
        by_instruction: dict[str | None, list[str]] = {}
        for source in pd.unique(sources):
            source = str(source)
            positions = np.flatnonzero(sources == source)
            if source in self.spec.tabular_sources:
                rows = [features[i] for i in positions]
                if any(r is None for r in rows):
                    raise InputError(f"source {source}: a tabular row has no feature vector")
                none = np.full(len(positions), -1, dtype=np.int64)
                groups[source] = SourceRows(positions, np.stack([np.asarray(r, dtype=np.float32) for r in rows]), none, none)
            else:
                by_instruction.setdefault(self.instruction(source), []).append(source)
        for instruction, members in by_instruction.items():
            positions = np.flatnonzero(np.isin(sources, members))
            encoded = self.encoder.encode_counted([documents[i] for i in positions], instruction=instruction)
            of_row = sources[positions]
            for source in members:
                mine = of_row == source
                groups[source] = SourceRows(positions[mine], encoded.vectors[mine], encoded.tokens[mine],
                                            encoded.tokens_cut[mine])
        return groups


class SourceRows(NamedTuple):
    """One source's rows of a chunk, as :meth:`InputEmbedder.embed_counted` returns them."""

    positions: np.ndarray    # int [n]: the rows' positions in the chunk
    inputs: np.ndarray       # float32 [n, input_dim]: MRQ-VAE inputs
    tokens: np.ndarray       # int64 [n]: a text row's tokens before truncation (-1 for tabular rows)
    tokens_cut: np.ndarray   # int64 [n]: tokens encoder.max_length cut from it (-1 for tabular rows)


class TokenizerRuntime:
    """The loaded text encoder and MRQ-VAE of one worker process."""

    def __init__(self, spec: InferenceSpec) -> None:
        import torch

        from u2qt_core.checkpoint import load_tokenizer

        self.spec = spec
        self.embedder = get_embedder(spec)
        device = "cuda" if spec.encoder.device != "cpu" and torch.cuda.is_available() else "cpu"
        self.model, version = load_tokenizer(Path(spec.model_dir), map_location=device)
        if version != spec.tokenizer_version:
            raise CheckpointError(
                f"tokenizer at {spec.model_dir} is {version} but the driver planned this run with "
                f"{spec.tokenizer_version}: the model folder changed during the run"
            )
        self.model.eval()
        self.device = torch.device(device)
        log.info("worker loaded tokenizer %s on %s", version, device)

    @classmethod
    def from_model(cls, spec: InferenceSpec, model) -> "TokenizerRuntime":
        """The runtime over an in-memory MRQ-VAE on the CPU (no bundle): ``u2qt paper-eval`` times
        the night's per-row work with it."""
        import torch

        runtime = cls.__new__(cls)
        runtime.spec, runtime.embedder = spec, get_embedder(spec)
        runtime.model, runtime.device = model.eval(), torch.device("cpu")
        return runtime

    def tokenize(self, sources: np.ndarray, documents: np.ndarray, features: np.ndarray) -> list[np.ndarray]:
        """Codes ``int16 [L]`` for every row, in input order."""
        return [row[0] for row in self.tokenize_counted(sources, documents, features)]

    def tokenize_counted(self, sources: np.ndarray, documents: np.ndarray,
                         features: np.ndarray) -> list[tuple[np.ndarray, int | None, int | None]]:
        """``(codes int16 [L], tokens, tokens cut)`` for every row, in input order (the counts are
        None for a tabular row)."""
        return [row[:3] for row in self.tokenize_rows(sources, documents, features)]

    def tokenize_rows(self, sources: np.ndarray, documents: np.ndarray,
                      features: np.ndarray) -> list[tuple[np.ndarray, int | None, int | None, float]]:
        """``(codes int16 [L], tokens, tokens cut, residual)`` for every row, in input order:
        :meth:`tokenize_counted` plus the row's quantization fidelity, ``||r^{L+1}|| / ||z||``
        from :meth:`MRQVAE.quantize_measured` (the quantizer's own last residual)."""
        import torch

        out: list = [None] * len(sources)
        for source, rows in self.embedder.embed_counted(sources, documents, features).items():
            tensor = torch.from_numpy(np.ascontiguousarray(rows.inputs, dtype=np.float32)).to(self.device)
            codes, residual = self.model.quantize_measured(tensor, source)
            codes, residual = codes.cpu().numpy().astype(np.int16), residual.cpu().numpy()
            for position, row_codes, tokens, cut, rel in zip(rows.positions, codes, rows.tokens, rows.tokens_cut, residual):
                out[position] = (row_codes, None if tokens < 0 else int(tokens), None if cut < 0 else int(cut), float(rel))
        return out


_CACHE: dict[tuple[str, str], object] = {}
_LOCK = threading.RLock()  # re-entrant: the runtime builds the embedder under it


def worker_cached(kind: str, spec: InferenceSpec, build):
    """``build(spec)``, built once per Python worker and kind, reused by every later task."""
    key = (kind, _spec_key(spec))
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = build(spec)
        return _CACHE[key]


def get_embedder(spec: InferenceSpec) -> InputEmbedder:
    """The worker-wide input embedder for ``spec`` (built once, reused by later tasks)."""
    return worker_cached("embedder", spec, InputEmbedder)


def get_runtime(spec: InferenceSpec) -> TokenizerRuntime:
    """The worker-wide tokenizer runtime for ``spec`` (built once, reused by later tasks)."""
    return worker_cached("runtime", spec, TokenizerRuntime)


def _failing_row(work, columns: tuple[np.ndarray, ...], rows: np.ndarray) -> int | None:
    """Bisect ``rows`` (known to fail together) down to one row that fails alone, or ``None``
    when no half fails on its own (a failure of the whole chunk, e.g. out of memory).
    Costs about twice the chunk's work, and only on the error path."""
    while len(rows) > 1:
        half = len(rows) // 2
        for part in (rows[:half], rows[half:]):
            try:
                work(*(column[part] for column in columns))
            except Exception:  # noqa: BLE001 -- any failure narrows the search
                rows = part
                break
        else:
            return None
    return int(rows[0])


def _plain(value):
    """A numpy scalar as the Python value it holds (so ``repr`` reads ``4``, not ``np.int64(4)``)."""
    return value.item() if isinstance(value, np.generic) else value


def run_chunks(spec: InferenceSpec, user_ids: np.ndarray, event_dates: np.ndarray,
               columns: tuple[np.ndarray, np.ndarray, np.ndarray], work) -> list:
    """``work(sources, documents, features)`` over chunks of ``spec.batch_rows`` rows, outputs
    in row order; a failure is re-raised as :class:`InferenceRowError` naming the row."""
    out: list = []
    for start in range(0, len(columns[0]), spec.batch_rows):
        chunk = tuple(column[start:start + spec.batch_rows] for column in columns)
        try:
            out.extend(work(*chunk))
        except Exception as exc:
            row = _failing_row(work, chunk, np.arange(len(chunk[0])))
            where = (f"user {_plain(user_ids[start + row])!r}, source {chunk[0][row]!r}, date {event_dates[start + row]}"
                     if row is not None else
                     f"a chunk of {len(chunk[0])} rows from user {_plain(user_ids[start])!r}, date {event_dates[start]} "
                     "(no single row fails alone)")
            raise InferenceRowError(f"inference failed on {where}: {type(exc).__name__}: {exc}") from exc
    return out


def row_error_from(exc: BaseException) -> InferenceRowError | None:
    """The :class:`InferenceRowError` a Spark task raised, from the (multi-line) Python
    traceback Spark wraps it in; ``None`` if ``exc`` holds none."""
    marker = f"{InferenceRowError.__module__}.{InferenceRowError.__name__}: "
    text = str(exc)
    if marker not in text:
        return None
    return InferenceRowError(text.rsplit(marker, 1)[1].strip().splitlines()[0])


def worker_error_from(exc: BaseException) -> InferenceRowError | NumericPathRefused | None:
    """The one-line error a Spark task raised on purpose: a failing row
    (:func:`row_error_from`) or a worker refusing its numeric path; ``None`` if ``exc`` holds neither."""
    row = row_error_from(exc)
    if row is not None:
        return row
    marker = f"{NumericPathRefused.__module__}.{NumericPathRefused.__name__}: "
    text = str(exc)
    if marker not in text:
        return None
    return NumericPathRefused(text.rsplit(marker, 1)[1].strip().splitlines()[0])


def _frame_columns(frame: tuple[pd.Series, ...]) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    user_ids, event_dates, sources, documents, features = (series.to_numpy() for series in frame)
    return user_ids, event_dates, (sources, documents, features)


#: the UDF's output struct; ``residual`` is the row's ||r^{L+1}|| / ||z|| (quantization fidelity)
TOKENIZED = "codes array<smallint>, tokens int, tokens_cut int, residual float"


def make_tokenize_udf(spec: InferenceSpec):
    """``tokenize(user_id, event_date, source, document, features) -> struct<codes, tokens,
    tokens_cut, residual>`` (:data:`TOKENIZED`: the row's codes, for a text row its tokens before
    truncation and those ``encoder.max_length`` cut, and the row's relative residual norm) as an
    iterator pandas UDF (``user_id`` / ``event_date`` only name a failing row). It is marked non-deterministic so that Spark never
    runs it twice to read two fields of its result."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(TOKENIZED)
    def tokenize(batches: Iterator[tuple[pd.Series, ...]]) -> Iterator[pd.DataFrame]:
        runtime = get_runtime(spec)
        for frame in batches:
            user_ids, event_dates, columns = _frame_columns(frame)
            rows = run_chunks(spec, user_ids, event_dates, columns, runtime.tokenize_rows)
            yield (pd.DataFrame(rows, columns=["codes", "tokens", "tokens_cut", "residual"])
                   .astype({"tokens": "Int32", "tokens_cut": "Int32", "residual": "float32"}))

    return tokenize.asNondeterministic()


def make_embed_udf(spec: InferenceSpec):
    """``embed(user_id, event_date, source, document, features) -> array<float>``: the MRQ-VAE input of each row
    (text embedding, or the tabular feature vector); samples the tokenizer's training data."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("array<float>")
    def embed(batches: Iterator[tuple[pd.Series, ...]]) -> Iterator[pd.Series]:
        embedder = get_embedder(spec)

        def rows_in_order(sources: np.ndarray, documents: np.ndarray, features: np.ndarray) -> list[np.ndarray]:
            out: list[np.ndarray | None] = [None] * len(sources)
            for positions, inputs in embedder.embed(sources, documents, features).values():
                for position, vector in zip(positions, inputs):
                    out[position] = vector
            return out  # type: ignore[return-value]

        for frame in batches:
            user_ids, event_dates, columns = _frame_columns(frame)
            yield pd.Series(run_chunks(spec, user_ids, event_dates, columns, rows_in_order))

    return embed
