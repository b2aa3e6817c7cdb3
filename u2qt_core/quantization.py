"""Codebooks for residual quantisation with buffered k-means initialisation and dead-code reset.

Why not ``vector_quantize_pytorch.ResidualVQ``?  It is the usual choice, but three requirements
here do not fit it exactly:

* **The K-sample rule.**  Its k-means initialisation runs on the first batch a codebook sees, even
  when that batch holds fewer than K vectors (it warns and samples duplicates).  Here a codebook is
  initialised only from a buffer that accumulates residuals across training steps until it holds
  at least ``kmeans_buffer_multiple * K`` of them.
* **Per-source routing.**  A row of source ``x`` goes through shared codebooks (fed by every source)
  and then through ``x``'s own codebooks (fed by ``x`` only); the ``union`` variant masks one
  level's argmin to the shared block plus the row's own block.  ResidualVQ quantises every row
  with the same stack of codebooks.
* **Loss-trained codebooks (FOUNDv2 eq. 8).**  Codebooks learn from the codebook term of eq. 8
  through the optimiser (not EMA), so a dead-code reset must also clear the optimiser's running
  moments of the replaced rows; see :meth:`Codebook.reset_dead_codes` and
  :meth:`u2qt_core.mrqvae.MRQVAE.reset_dead_codes`.

A :class:`Codebook` is one level's table of ``num_segments * K`` code vectors.  A segment is a block
of K codes serving a set of sources: one segment for a shared or a source-specific codebook, and
``1 + S`` segments for a ``union`` level (block 0 shared, block ``1 + i`` for source ``i``).
Distances are always computed in fp32, outside autocast.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from u2qt_core.errors import InputError

__all__ = ["Codebook", "kmeans", "nearest_code", "reset_optimizer_rows", "squared_distances"]

logger = logging.getLogger(__name__)


def squared_distances(x: Tensor, codebook: Tensor) -> Tensor:
    """Squared Euclidean distances in fp32: x [B, D], codebook [K, D] -> [B, K]."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        x32 = x.float()
        c32 = codebook.float()
        dist = (
            x32.pow(2).sum(dim=1, keepdim=True)
            - 2.0 * (x32 @ c32.t())
            + c32.pow(2).sum(dim=1).unsqueeze(0)
        )
    return dist


def nearest_code(x: Tensor, codebook: Tensor) -> Tensor:
    """Index of the nearest code (eq. 4) in fp32: x [B, D], codebook [K, D] -> LongTensor [B]."""
    return squared_distances(x, codebook).argmin(dim=1)


def kmeans(samples: Tensor, k: int, iters: int) -> Tensor:
    """Lloyd's k-means: samples [N, D] (N >= k) -> centroids [k, D] in fp32.

    Centroids start at k distinct rows drawn with the global torch RNG (so seeding torch makes it
    deterministic); an empty cluster keeps its previous centroid (the dead-code reset handles it).
    """
    n = samples.shape[0]
    if n < k:
        raise ValueError(f"k-means needs at least k={k} samples, got {n}")
    data = samples.detach().float()
    perm = torch.randperm(n, device="cpu")[:k].to(data.device)
    centroids = data[perm].clone()
    for _ in range(iters):
        assign = nearest_code(data, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, data)
        counts = torch.bincount(assign, minlength=k)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled].unsqueeze(1).to(data.dtype)
    return centroids


def reset_optimizer_rows(optimizer: torch.optim.Optimizer, param: Tensor, rows: Tensor) -> None:
    """Make the optimiser state of the replaced ``rows`` of ``param`` [N, D] consistent with a
    fresh code that has the same step count as every other row.

    Adam keeps one step count per parameter tensor, so at step t >> 1 its bias corrections are
    ~1.  Zeroing a row's ``exp_avg_sq`` (as one would for a new parameter) then makes its next
    updates ``(1 - b1^k) / sqrt(1 - b2^k)`` times the learning rate: 3.2x at the first step,
    about 6.5x ten steps later (b1=0.9, b2=0.999).  Instead the first moment is zeroed (no
    stale direction) and the second moment is set to the mean of the rows that were kept (a
    warm estimate of this table's gradient scale, per dimension), so the row's first steps
    are at most ~lr, growing with its own momentum.  SGD momentum buffers are zeroed.
    """
    state = optimizer.state.get(param)
    if not state or rows.numel() == 0:
        return
    kept = torch.ones(param.shape[0], dtype=torch.bool, device=param.device)
    kept[rows.to(param.device)] = False
    with torch.no_grad():
        for key in ("exp_avg", "momentum_buffer"):
            value = state.get(key)
            if isinstance(value, Tensor) and value.shape == param.shape:
                value[rows.to(value.device)] = 0
        for key in ("exp_avg_sq", "max_exp_avg_sq"):
            value = state.get(key)
            if isinstance(value, Tensor) and value.shape == param.shape:
                reference = value[kept] if bool(kept.any()) else value
                value[rows.to(value.device)] = reference.mean(dim=0).to(value.dtype)


class Codebook(nn.Module):
    """One residual-quantisation level's code table, made of segments of K codes.

    Persistent state (saved with the tokenizer): ``embedding`` [S*K, D] and ``initialized`` [S]
    (bool per segment).  Training-only state (see :meth:`training_state`): per-code usage counts of
    the current dead-code window, the k-means buffers of uninitialised segments, and a FIFO of the
    most recent residuals per source (replacement pool for dead codes).
    """

    def __init__(
        self,
        name: str,
        num_codes: int,
        code_dim: int,
        segment_sources: Sequence[Sequence[str]],
        *,
        kmeans_init: bool = True,
        kmeans_buffer_multiple: int = 4,
        kmeans_iters: int = 10,
    ) -> None:
        super().__init__()
        if num_codes < 2:
            raise ValueError("num_codes must be >= 2")
        self.name = name
        self.num_codes = num_codes
        self.code_dim = code_dim
        self.segment_sources: list[tuple[str, ...]] = [tuple(s) for s in segment_sources]
        self.num_segments = len(self.segment_sources)
        self.kmeans_init = kmeans_init
        self.kmeans_buffer_multiple = kmeans_buffer_multiple
        self.kmeans_iters = kmeans_iters
        self.sources: list[str] = sorted({s for seg in self.segment_sources for s in seg})

        size = self.num_segments * num_codes
        self.embedding = nn.Parameter(torch.randn(size, code_dim) / code_dim**0.5)
        self.register_buffer(
            "initialized", torch.full((self.num_segments,), not kmeans_init, dtype=torch.bool)
        )
        self.register_buffer("usage", torch.zeros(size, dtype=torch.long), persistent=False)
        # Per source: the segments serving it and the code indices it may select.
        self._segments_of: dict[str, list[int]] = {}
        for source in self.sources:
            segs = [i for i, seg in enumerate(self.segment_sources) if source in seg]
            self._segments_of[source] = segs
            allowed = torch.cat([torch.arange(i * num_codes, (i + 1) * num_codes) for i in segs])
            self.register_buffer(f"_allowed_{source}", allowed, persistent=False)
        self._kmeans_buffer: list[list[Tensor]] = [[] for _ in range(self.num_segments)]
        # segments k-means-initialised since the last dead-code reset: spared by that reset
        self._fresh: set[int] = set()
        self._recent: dict[str, Tensor] = {}
        self._warned_uninitialized = False

    # ------------------------------------------------------------------ lookup
    def allowed_codes(self, source: str) -> Tensor:
        """Code indices ``source`` may select, LongTensor [K * segments serving it]."""
        if source not in self._segments_of:
            raise InputError(f"codebook {self.name}: source {source!r} is not served (serves {self.sources})")
        return getattr(self, f"_allowed_{source}")

    def segment_ranges(self, source: str) -> list[tuple[int, int]]:
        """Row ranges ``[(start, stop), ...]`` of the segments serving ``source``, in index order
        (the same codes as :meth:`allowed_codes`, as contiguous blocks of the table)."""
        if source not in self._segments_of:
            raise InputError(f"codebook {self.name}: source {source!r} is not served (serves {self.sources})")
        k = self.num_codes
        return [(seg * k, (seg + 1) * k) for seg in self._segments_of[source]]

    def is_ready(self, source: str) -> bool:
        """Whether every segment serving ``source`` has been initialised."""
        return all(bool(self.initialized[i]) for i in self._segments_of[source])

    def lookup(self, residual: Tensor, source: str, *, train: bool) -> tuple[Tensor, Tensor] | None:
        """Quantise one level: residual [B, D] -> (codes LongTensor [B], code vectors [B, D]).

        In training mode the residuals first feed the k-means buffers of uninitialised segments
        (possibly initialising them); if a segment serving ``source`` is still uninitialised the
        level is skipped and ``None`` is returned (the caller passes the residual through).  Usage
        counts and the recent-residual pool are updated in training mode only.
        """
        allowed = self.allowed_codes(source)
        if train:
            self._observe(residual.detach(), source)
            if not self.is_ready(source):
                return None
        elif not self._warned_uninitialized and not self.is_ready(source):
            logger.warning("codebook %s is not initialised yet; its codes are meaningless", self.name)
            self._warned_uninitialized = True
        local = nearest_code(residual, self.embedding.index_select(0, allowed))
        codes = allowed[local]
        vectors = nn.functional.embedding(codes, self.embedding)
        if train:
            with torch.no_grad():
                self.usage.index_add_(0, codes, torch.ones_like(codes))
                self._remember(residual.detach(), source)
        return codes, vectors

    def check_codes(self, codes: Tensor, source: str, level: int) -> None:
        """Raise :class:`InputError` unless every entry of ``codes`` is selectable by ``source``."""
        allowed = self.allowed_codes(source)
        if codes.numel() == 0:
            return
        if codes.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
            raise InputError(f"source {source!r} level {level}: codes must be integers, got {codes.dtype}")
        mask = torch.zeros(self.embedding.shape[0] + 1, dtype=torch.bool, device=codes.device)
        mask[allowed.to(codes.device)] = True
        flat = codes.reshape(-1).long()
        bad = (flat < 0) | (flat >= self.embedding.shape[0])
        bad |= ~mask[flat.clamp(0, self.embedding.shape[0])]
        if bool(bad.any()):
            first = int(flat[bad.nonzero()[0, 0]])
            raise InputError(
                f"source {source!r} level {level} (codebook {self.name}): code {first} is out of range "
                f"(allowed: {self._describe_allowed(source)})"
            )

    def _describe_allowed(self, source: str) -> str:
        k = self.num_codes
        return ", ".join(f"[{i * k}, {(i + 1) * k})" for i in self._segments_of[source])

    # ------------------------------------------------------------------ k-means initialisation
    def _observe(self, residual: Tensor, source: str) -> None:
        """Add residuals [B, D] to the buffers of uninitialised segments serving ``source``."""
        needed = self.kmeans_buffer_multiple * self.num_codes
        for seg in self._segments_of[source]:
            if bool(self.initialized[seg]):
                continue
            buf = self._kmeans_buffer[seg]
            buf.append(residual.float().clone())
            held = sum(t.shape[0] for t in buf)
            if held >= max(needed, self.num_codes):
                self._initialize_segment(seg, torch.cat(buf))

    def _initialize_segment(self, seg: int, samples: Tensor) -> None:
        k = self.num_codes
        if samples.shape[0] < k:  # guarded by the caller; kept as a hard invariant
            raise RuntimeError(f"refusing k-means init of {self.name} from {samples.shape[0]} < K={k} points")
        centroids = kmeans(samples, k, self.kmeans_iters)
        with torch.no_grad():
            self.embedding[seg * k : (seg + 1) * k] = centroids.to(self.embedding.dtype)
            self.initialized[seg] = True
            self.usage[seg * k : (seg + 1) * k] = 0
        self._kmeans_buffer[seg] = []
        self._fresh.add(seg)
        logger.info(
            "k-means initialised codebook %s segment %d from %d residuals", self.name, seg, samples.shape[0]
        )

    def buffered(self, seg: int = 0) -> int:
        """Number of residuals waiting in segment ``seg``'s k-means buffer."""
        return sum(t.shape[0] for t in self._kmeans_buffer[seg])

    # ------------------------------------------------------------------ dead codes
    def _remember(self, residual: Tensor, source: str) -> None:
        """Keep the most recent ``K`` residuals of ``source`` as the dead-code replacement pool."""
        previous = self._recent.get(source)
        merged = residual.float() if previous is None else torch.cat([previous, residual.float()])
        self._recent[source] = merged[-self.num_codes :].clone()

    def reset_dead_codes(self, threshold: int) -> Tensor:
        """Replace codes used fewer than ``threshold`` times since the last reset.

        Each dead code of a segment is overwritten by a random recent residual of the sources that
        segment serves, and usage counts restart from zero (a new window).  A segment
        k-means-initialised since the previous reset is spared this once (grace period), so
        fresh centroids are first judged on a full window of use, never on the few steps
        between their initialisation and the end of the window it happened in.  Returns
        the replaced row indices (LongTensor) so the caller can reset their optimiser state
        (:func:`reset_optimizer_rows`).
        """
        k = self.num_codes
        replaced: list[Tensor] = []
        with torch.no_grad():
            for seg, seg_sources in enumerate(self.segment_sources):
                if not bool(self.initialized[seg]):
                    continue
                dead = (self.usage[seg * k : (seg + 1) * k] < threshold).nonzero().flatten()
                self.usage[seg * k : (seg + 1) * k] = 0
                if seg in self._fresh:
                    self._fresh.discard(seg)
                    logger.debug("codebook %s segment %d: freshly initialised, spared", self.name, seg)
                    continue
                pools = [self._recent[s] for s in seg_sources if s in self._recent]
                if dead.numel() == 0 or not pools:
                    continue
                pool = torch.cat(pools)
                n = dead.numel()
                if pool.shape[0] >= n:
                    pick = torch.randperm(pool.shape[0], device="cpu")[:n]
                else:
                    pick = torch.randint(0, pool.shape[0], (n,), device="cpu")
                rows = dead + seg * k
                self.embedding[rows] = pool[pick.to(pool.device)].to(self.embedding.dtype)
                replaced.append(rows)
                logger.debug("codebook %s segment %d: reset %d dead codes", self.name, seg, n)
        if replaced:
            return torch.cat(replaced)
        return torch.zeros(0, dtype=torch.long, device=self.embedding.device)

    # ------------------------------------------------------------------ training state
    def training_state(self) -> dict[str, Tensor]:
        """Training-only tensors (usage, k-means buffers, recent residuals) for resumable checkpoints."""
        state: dict[str, Tensor] = {"usage": self.usage.detach().cpu().clone()}
        for seg, buf in enumerate(self._kmeans_buffer):
            if buf:
                state[f"kmeans_buffer.{seg}"] = torch.cat(buf).cpu()
        for source, recent in self._recent.items():
            state[f"recent.{source}"] = recent.cpu().clone()
        state["fresh"] = torch.tensor(sorted(self._fresh), dtype=torch.long)
        return state

    def load_training_state(self, state: dict[str, Tensor]) -> None:
        """Inverse of :meth:`training_state` (missing entries mean empty)."""
        device = self.embedding.device
        if "usage" in state:
            self.usage.copy_(state["usage"].to(device))
        self._kmeans_buffer = [
            [state[f"kmeans_buffer.{seg}"].to(device)] if f"kmeans_buffer.{seg}" in state else []
            for seg in range(self.num_segments)
        ]
        self._recent = {
            key.split(".", 1)[1]: value.to(device) for key, value in state.items() if key.startswith("recent.")
        }
        self._fresh = {int(seg) for seg in state["fresh"].tolist()} if "fresh" in state else set()
