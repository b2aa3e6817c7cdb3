"""Encoder + MRQ-VAE inference inside Spark: an iterator pandas UDF whose worker loads the
models once and keeps them for every later batch and task it runs.

Rows are ``(source, document, features)``: text sources carry a document that the LLM text
encoder embeds (with that source's instruction when the encoder uses last-token pooling),
the tabular source carries a feature vector for the MRQ-VAE's tabular MLP. The UDF returns
the ``L`` codes of each row (``array<smallint>``).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import pandas as pd

from u2qt_core.encoders.text import TextEncoderConfig, get_text_encoder
from u2qt_core.errors import CheckpointError, InputError

if TYPE_CHECKING:
    from pipelines.settings import PipelineSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferenceSpec:
    """Everything a worker needs to rebuild the models; small and picklable."""

    model_dir: str
    tokenizer_version: str
    encoder: TextEncoderConfig
    instructions: dict[str, str]          # text source -> instruction (used by last-token pooling)
    tabular_sources: tuple[str, ...]
    batch_rows: int = 256
    torch_threads: int = 1                # intra-op threads per Python worker (match spark.task.cpus)


def inference_spec(settings: "PipelineSettings", *, tabular_sources: tuple[str, ...],
                   model_dir: str = "", tokenizer_version: str = "") -> InferenceSpec:
    """The spec the pipeline's settings describe (per-source instructions from ``sources.yaml``).
    ``model_dir`` / ``tokenizer_version`` stay empty for embedding-only UDFs."""
    sources = settings.sources_config()
    return InferenceSpec(
        model_dir=model_dir,
        tokenizer_version=tokenizer_version,
        encoder=settings.encoder,
        instructions={name: src.instruction for name, src in sources.text_sources.items()},
        tabular_sources=tabular_sources,
        batch_rows=settings.inference.batch_rows,
        torch_threads=settings.inference.torch_threads,
    )


def _spec_key(spec: InferenceSpec) -> str:
    return "|".join([spec.model_dir, spec.tokenizer_version, spec.encoder.model_dump_json()])


class InputEmbedder:
    """Builds MRQ-VAE inputs: text rows through the LLM encoder, tabular rows as they are."""

    def __init__(self, spec: InferenceSpec) -> None:
        import torch

        if spec.torch_threads > 0:
            # every Spark task owns spark.task.cpus cores; torch's default (all cores) oversubscribes them
            torch.set_num_threads(spec.torch_threads)
        self.spec = spec
        self.encoder = get_text_encoder(spec.encoder)

    def embed(self, sources: np.ndarray, documents: np.ndarray, features: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Group rows by source: ``{source: (row_positions [n], inputs float32 [n, input_dim])}``."""
        groups: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for source in pd.unique(sources):
            positions = np.flatnonzero(sources == source)
            if source in self.spec.tabular_sources:
                rows = [features[i] for i in positions]
                if any(r is None for r in rows):
                    raise InputError(f"source {source}: a tabular row has no feature vector")
                inputs = np.stack([np.asarray(r, dtype=np.float32) for r in rows])
            else:
                if source not in self.spec.instructions:
                    raise InputError(f"unknown source {source!r}; known: {sorted(self.spec.instructions)}")
                texts = [documents[i] for i in positions]
                instruction = self.spec.instructions[source] if self.spec.encoder.pooling == "last_token" else None
                inputs = self.encoder.encode(texts, instruction=instruction)
            groups[str(source)] = (positions, inputs)
        return groups


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

    def tokenize(self, sources: np.ndarray, documents: np.ndarray, features: np.ndarray) -> list[np.ndarray]:
        """Codes ``int16 [L]`` for every row, in input order."""
        import torch

        out: list[np.ndarray | None] = [None] * len(sources)
        for source, (positions, inputs) in self.embedder.embed(sources, documents, features).items():
            tensor = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)).to(self.device)
            codes = self.model.quantize(tensor, source).cpu().numpy().astype(np.int16)
            for position, row_codes in zip(positions, codes):
                out[position] = row_codes
        return out  # type: ignore[return-value]


_CACHE: dict[tuple[str, str], object] = {}
_LOCK = threading.RLock()  # re-entrant: the runtime builds the embedder under it


def _cached(kind: str, spec: InferenceSpec, build):
    key = (kind, _spec_key(spec))
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = build(spec)
        return _CACHE[key]


def get_embedder(spec: InferenceSpec) -> InputEmbedder:
    """The worker-wide input embedder for ``spec`` (built once, reused by later tasks)."""
    return _cached("embedder", spec, InputEmbedder)


def get_runtime(spec: InferenceSpec) -> TokenizerRuntime:
    """The worker-wide tokenizer runtime for ``spec`` (built once, reused by later tasks)."""
    return _cached("runtime", spec, TokenizerRuntime)


def _in_chunks(spec: InferenceSpec, frame: tuple[pd.Series, pd.Series, pd.Series], work) -> list:
    sources, documents, features = (series.to_numpy() for series in frame)
    out: list = []
    for start in range(0, len(sources), spec.batch_rows):
        stop = start + spec.batch_rows
        out.extend(work(sources[start:stop], documents[start:stop], features[start:stop]))
    return out


def make_tokenize_udf(spec: InferenceSpec):
    """``tokenize(source, document, features) -> array<smallint>`` as an iterator pandas UDF."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("array<smallint>")
    def tokenize(batches: Iterator[tuple[pd.Series, pd.Series, pd.Series]]) -> Iterator[pd.Series]:
        runtime = get_runtime(spec)
        for frame in batches:
            yield pd.Series(_in_chunks(spec, frame, runtime.tokenize))

    return tokenize


def make_embed_udf(spec: InferenceSpec):
    """``embed(source, document, features) -> array<float>``: the MRQ-VAE input of each row
    (text embedding, or the tabular feature vector); samples the tokenizer's training data."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("array<float>")
    def embed(batches: Iterator[tuple[pd.Series, pd.Series, pd.Series]]) -> Iterator[pd.Series]:
        embedder = get_embedder(spec)

        def rows_in_order(sources: np.ndarray, documents: np.ndarray, features: np.ndarray) -> list[np.ndarray]:
            out: list[np.ndarray | None] = [None] * len(sources)
            for positions, inputs in embedder.embed(sources, documents, features).values():
                for position, vector in zip(positions, inputs):
                    out[position] = vector
            return out  # type: ignore[return-value]

        for frame in batches:
            yield pd.Series(_in_chunks(spec, frame, rows_in_order))

    return embed
