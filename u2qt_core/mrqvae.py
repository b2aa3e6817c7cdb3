"""Multi-view residual-quantised VAE (MRQ-VAE), FOUNDv2 sections 4.1-4.2, eqs. 3-8.

Per source ``x``:

1. input: text sources give their text-encoder embedding ``[B, embed_dim]`` as is; tabular sources
   give raw features ``[B, F]`` that a per-source MLP maps to ``[B, embed_dim]`` (eq. 3), trained
   end to end; with ``tabular_standardize`` each feature is first standardised by the mean and
   standard deviation of the training rows (:meth:`MRQVAE.fit_tabular_scaling`, buffers saved with
   the weights), and the decoder reconstructs the standardised features, so every feature weighs
   the same in ``L_re`` (raw, a one-hot column of variance .25 outweighed a credit score of
   variance .005 fifty times);
2. a SHARED MLP maps it to the latent ``z`` ``[B, code_dim]``;
3. residual quantisation (eqs. 4-5) over ``L`` levels; the codebook of each level depends on the
   variant:

   * ``multiview`` (the papers): levels ``1..Lc`` use shared codebooks ``shared.l`` (one per level,
     common to all sources), levels ``Lc+1..Lc+Lu`` use the source's own codebooks ``<source>.l``;
   * ``shared_only``: all ``L`` levels shared; ``specific_only``: all ``L`` levels source-specific;
   * ``union`` (the authors' released form): level ``l`` has ONE codebook ``union.l`` of
     ``K * (1 + S)`` codes.  **Index layout:** rows ``[0, K)`` are the shared block, rows
     ``[K * (1 + i), K * (2 + i))`` belong to ``config.sources[i]``.  A row of source ``i``
     takes its argmin over the shared block and block ``1 + i`` only, and its codes are
     reported as indices into the whole union table;

4. ``z_hat`` = sum of the selected code vectors (eq. 6), straight-through to ``z``;
5. a source-specific MLP decoder reconstructs the source input (the embedding, or the raw
   tabular features), loss ``L_re`` (eq. 7, mean squared error) + ``L_rq`` (eq. 8, codebook term
   plus ``alpha`` times the commitment term, each a mean squared error, summed over levels).

Warm-up (``kmeans_init``): in training mode, a level whose codebook is not initialised yet only
feeds its k-means buffer; the residual is passed through (``z_hat`` = ``z`` for the batch) and the
codes of that level and of the following ones are reported as ``-1``.  The eval path
(:meth:`MRQVAE.quantize`) always quantises every level and never touches training state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from u2qt_core.config import MRQVAEConfig
from u2qt_core.errors import InputError
from u2qt_core.feature_scaling import FeatureScaler
from u2qt_core.quantization import Codebook, reset_optimizer_rows

__all__ = ["MRQVAE", "MRQVAEOutput", "mean_loss"]

logger = logging.getLogger(__name__)


@dataclass
class MRQVAEOutput:
    """Result of :meth:`MRQVAE.forward` for one source."""

    reconstruction: Tensor  # [B, input_dims[source]]
    codes: Tensor  # LongTensor [B, L]; -1 for levels skipped during k-means warm-up (training only)
    quantized: Tensor  # [B, code_dim], sum of selected code vectors (eq. 6), straight-through
    latent: Tensor  # [B, code_dim], z before quantisation
    recon_loss: Tensor  # scalar, eq. 7 (mean squared error)
    rq_loss: Tensor  # scalar, eq. 8 with commitment weight alpha
    loss: Tensor  # recon_loss + rq_loss


@dataclass
class _RQResult:
    codes: Tensor  # [B, L]
    z_hat: Tensor  # [B, code_dim]
    rq_loss: Tensor  # scalar
    residual_norms: list[Tensor]  # per entered level l: ||r^l|| [B]; last entry ||r^{L+1}|| if complete


def mean_loss(outputs: dict[str, MRQVAEOutput]) -> Tensor:
    """Training loss of :meth:`MRQVAE.forward_batch`: the mean of the per-source losses."""
    if not outputs:
        raise InputError("empty batch: no source given")
    return torch.stack([out.loss for out in outputs.values()]).mean()


def _mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))


class MRQVAE(nn.Module):
    """The U2QT tokenizer: see the module docstring for the architecture and index layouts."""

    def __init__(self, config: MRQVAEConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.tabular_encoders = nn.ModuleDict(
            {s: _mlp(c.input_dims[s], c.hidden_dim, c.embed_dim) for s in c.tabular_sources}
        )
        # empty without tabular_standardize: such a model's tensors are those of bundles saved before the key
        self.tabular_scalers = nn.ModuleDict(
            {s: FeatureScaler(c.input_dims[s]) for s in c.tabular_sources} if c.tabular_standardize else {}
        )
        self.shared_encoder = _mlp(c.embed_dim, c.hidden_dim, c.code_dim)
        self.decoders = nn.ModuleDict({s: _mlp(c.code_dim, c.hidden_dim, c.input_dims[s]) for s in c.sources})

        self.codebooks = nn.ModuleDict()
        self._public_names: dict[str, str] = {}  # module key -> public name ("shared.1", "bill.3")
        self._routes: dict[str, list[str]] = {s: [] for s in c.sources}  # source -> key per level
        for level in range(1, c.num_levels + 1):
            kind = c.level_kind(level)
            if kind == "shared":
                self._add_codebook(f"shared_{level}", f"shared.{level}", [c.sources], c.sources)
            elif kind == "union":
                segments = [list(c.sources)] + [[s] for s in c.sources]
                self._add_codebook(f"union_{level}", f"union.{level}", segments, c.sources)
            else:
                for s in c.sources:
                    self._add_codebook(f"src_{s}_{level}", f"{s}.{level}", [[s]], [s])

    def _add_codebook(self, key: str, name: str, segments: list[list[str]], sources: list[str]) -> None:
        c = self.config
        self.codebooks[key] = Codebook(
            name,
            c.num_codes,
            c.code_dim,
            segments,
            kmeans_init=c.kmeans_init,
            kmeans_buffer_multiple=c.kmeans_buffer_multiple,
            kmeans_iters=c.kmeans_iters,
        )
        self._public_names[key] = name
        for s in sources:
            self._routes[s].append(key)

    # ------------------------------------------------------------------ helpers
    def route(self, source: str) -> list[Codebook]:
        """The codebook used at each level (index 0 = level 1) for ``source``."""
        self._check_source(source)
        return [self.codebooks[key] for key in self._routes[source]]

    def route_names(self, source: str) -> list[str]:
        """Public name of the codebook used at each level for ``source`` (index 0 = level 1)."""
        self._check_source(source)
        return [self._public_names[key] for key in self._routes[source]]

    def named_codebooks(self) -> dict[str, Codebook]:
        """Public codebook name ("shared.1", "bill.3", "union.2") -> codebook, in level order."""
        return {self._public_names[key]: cb for key, cb in self.codebooks.items()}

    def codebook_sizes(self) -> dict[str, int]:
        """Codebook name -> number of codes (K; ``K * (1 + S)`` for a ``union.l`` codebook)."""
        return {name: int(cb.embedding.shape[0]) for name, cb in self.named_codebooks().items()}

    def uninitialized_codebooks(self) -> list[str]:
        """Names of codebooks with at least one segment still waiting for k-means init."""
        return [name for name, cb in self.named_codebooks().items() if not bool(cb.initialized.all())]

    def _check_source(self, source: str) -> None:
        if source not in self._routes:
            raise InputError(f"unknown source {source!r}; known sources: {self.config.sources}")

    def _check_input(self, x: Tensor, source: str) -> None:
        self._check_source(source)
        dim = self.config.input_dims[source]
        if not isinstance(x, Tensor):
            raise InputError(f"source {source!r}: expected a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != dim:
            raise InputError(f"source {source!r}: expected input of shape [B, {dim}], got {list(x.shape)}")
        if not x.is_floating_point():
            raise InputError(f"source {source!r}: expected a floating-point tensor, got {x.dtype}")
        bad_rows = (~torch.isfinite(x)).any(dim=1).nonzero().flatten()
        if bad_rows.numel():
            more = f" (and {bad_rows.numel() - 1} more rows)" if bad_rows.numel() > 1 else ""
            raise InputError(f"source {source!r}: non-finite value (NaN/inf) in row {int(bad_rows[0])}{more}")

    # ------------------------------------------------------------------ model
    def encode(self, x: Tensor, source: str) -> Tensor:
        """Latent ``z`` before quantisation: x [B, input_dims[source]] -> [B, code_dim]."""
        self._check_input(x, source)
        return self._encode(x, source)

    def _encode(self, x: Tensor, source: str) -> Tensor:
        if source in self.tabular_scalers:
            x = self.tabular_scalers[source](x)
        h = self.tabular_encoders[source](x) if source in self.tabular_encoders else x
        return self.shared_encoder(h)

    @torch.no_grad()
    def fit_tabular_scaling(self, data: dict[str, Tensor]) -> None:
        """Fit each tabular source's :class:`FeatureScaler` on its training rows ``data[source]``
        [N, F] (before training; a no-op without ``tabular_standardize``)."""
        for source, scaler in self.tabular_scalers.items():
            if source in data and len(data[source]):
                scaler.fit(data[source])

    def _residual_quantize(self, z: Tensor, source: str, *, train: bool) -> _RQResult:
        """Eqs. 4-6 and 8 for latent z [B, code_dim] of one source."""
        alpha = self.config.commitment_weight
        batch = z.shape[0]
        codes = torch.full((batch, self.config.num_levels), -1, dtype=torch.long, device=z.device)
        residual = z.float()
        z_hat = torch.zeros_like(residual)
        rq_loss = residual.new_zeros(())
        norms: list[Tensor] = []
        complete = True
        for level, codebook in enumerate(self.route(source)):
            norms.append(residual.detach().norm(dim=1))
            found = codebook.lookup(residual, source, train=train)
            if found is None:  # k-means warm-up: pass the residual through
                z_hat = z_hat + residual
                complete = False
                break
            level_codes, vectors = found
            codes[:, level] = level_codes
            rq_loss = rq_loss + F.mse_loss(vectors, residual.detach()) + alpha * F.mse_loss(residual, vectors.detach())
            z_hat = z_hat + vectors
            residual = residual - vectors.detach()
        if complete:
            norms.append(residual.detach().norm(dim=1))
        return _RQResult(codes=codes, z_hat=z_hat, rq_loss=rq_loss, residual_norms=norms)

    def forward(self, x: Tensor, source: str) -> MRQVAEOutput:
        """Tokenise and reconstruct one source: x [B, input_dims[source]] (B >= 1)."""
        self._check_input(x, source)
        if x.shape[0] == 0:
            raise InputError(f"source {source!r}: empty batch")
        z = self._encode(x, source)
        rq = self._residual_quantize(z, source, train=self.training)
        quantized = z + (rq.z_hat.to(z.dtype) - z).detach()  # straight-through estimator
        reconstruction = self.decoders[source](quantized)
        if source in self.tabular_scalers:     # the loss on the standardised features, the output in raw units
            scaler = self.tabular_scalers[source]
            recon_loss = F.mse_loss(reconstruction.float(), scaler(x.float()))
            reconstruction = scaler.inverse(reconstruction)
        else:
            recon_loss = F.mse_loss(reconstruction.float(), x.float())
        return MRQVAEOutput(
            reconstruction=reconstruction,
            codes=rq.codes,
            quantized=quantized,
            latent=z,
            recon_loss=recon_loss,
            rq_loss=rq.rq_loss,
            loss=recon_loss + rq.rq_loss,
        )

    def forward_batch(self, batch: dict[str, Tensor]) -> dict[str, MRQVAEOutput]:
        """Several sources at once (in ``config.sources`` order); train on :func:`mean_loss` of it."""
        for source in batch:
            self._check_source(source)
        return {s: self.forward(batch[s], s) for s in self.config.sources if s in batch}

    mean_loss = staticmethod(mean_loss)

    # ------------------------------------------------------------------ eval / token API
    @torch.no_grad()
    def quantize(self, x: Tensor, source: str) -> Tensor:
        """Inference path, fp32, no state change: x [B, input_dims[source]] -> codes LongTensor [B, L].

        The lean form of :meth:`quantize_reference` with bit-identical codes: no losses, no
        ``z_hat``, no residual norms, no copy of the codebook (each level reads the rows serving
        ``source`` as views of its table) and one matmul per segment whose output buffer is
        finished in place: ``(-2 r) @ c.T + ||r||^2 + ||c||^2`` (scaling by -2 is exact, and the
        two additions run in the reference's order, so every distance is the same float).  A fused
        ``addmm`` without ``||r||^2`` measured ~9% faster on CPU but rounds differently and moved
        about one code in 16,000 on near ties, so it is not used.  Cost per level:
        ``B x K_allowed x D`` multiply-adds plus ``O(B x K_allowed + (B + K_allowed) x D)``.
        """
        return self._lean_quantize(x, source, measure=False)[0]

    @torch.no_grad()
    def quantize_measured(self, x: Tensor, source: str) -> tuple[Tensor, Tensor]:
        """:meth:`quantize` plus its fidelity: ``(codes LongTensor [B, L], relative residual
        float32 [B])`` where the relative residual is ``||r^{L+1}|| / ||z||``, the norm of the
        latent ``z`` [B, code_dim] left after subtracting the chosen code vectors of every level,
        over the latent's own norm (0: reconstructed exactly; ~1: the codes explain nothing; 0 for
        a zero latent). Same codes as :meth:`quantize`, bit for bit; costs one more row lookup and
        two norms per row on top of it."""
        codes, relative = self._lean_quantize(x, source, measure=True)
        assert relative is not None
        return codes, relative

    def _lean_quantize(self, x: Tensor, source: str, *, measure: bool) -> tuple[Tensor, Tensor | None]:
        """The body of :meth:`quantize`: codes [B, L] and, with ``measure``, ||r^{L+1}|| / ||z|| [B]."""
        self._check_input(x, source)
        with torch.autocast(device_type=x.device.type, enabled=False):
            residual = self._encode(x.float(), source).float()
            latent_norm = residual.norm(dim=1) if measure else None
            route = self.route(source)
            codes = torch.empty((residual.shape[0], len(route)), dtype=torch.long, device=residual.device)
            for level, codebook in enumerate(route):
                table = codebook.embedding.detach().float()
                blocks = [table[start:stop] for start, stop in codebook.segment_ranges(source)]
                scaled = residual * -2.0
                norms = residual.pow(2).sum(dim=1, keepdim=True)
                dist = [torch.mm(scaled, b.t()).add_(norms).add_(b.pow(2).sum(dim=1)) for b in blocks]
                local = (dist[0] if len(dist) == 1 else torch.cat(dist, dim=1)).argmin(dim=1)
                level_codes = self._local_to_global(local, codebook, source)
                codes[:, level] = level_codes
                if measure or level + 1 < len(route):
                    residual = residual - F.embedding(level_codes, table)
            if latent_norm is None:
                return codes, None
            relative = torch.where(latent_norm > 0, residual.norm(dim=1) / latent_norm.clamp_min(1e-30),
                                   torch.zeros_like(latent_norm))
            return codes, relative

    @staticmethod
    def _local_to_global(local: Tensor, codebook: Codebook, source: str) -> Tensor:
        """Index into the concatenated allowed blocks [B] -> index into the whole table [B]."""
        ranges = codebook.segment_ranges(source)
        if len(ranges) == 1:
            return local + ranges[0][0] if ranges[0][0] else local
        k = codebook.num_codes
        starts = torch.tensor([start for start, _ in ranges], dtype=local.dtype, device=local.device)
        return starts[local // k] + local % k

    @torch.no_grad()
    def quantize_reference(self, x: Tensor, source: str) -> Tensor:
        """The full eval path (losses, ``z_hat`` and residual norms computed and dropped): the
        reference :meth:`quantize` is tested and benchmarked against.  Same shapes."""
        self._check_input(x, source)
        with torch.autocast(device_type=x.device.type, enabled=False):
            z = self._encode(x.float(), source)
            return self._residual_quantize(z.float(), source, train=False).codes

    @torch.no_grad()
    def quantize_with_residuals(self, x: Tensor, source: str) -> tuple[Tensor, Tensor, Tensor]:
        """Like :meth:`quantize`, also returning quantized [B, code_dim] and ||r^l|| [B, L + 1]."""
        self._check_input(x, source)
        with torch.autocast(device_type=x.device.type, enabled=False):
            z = self._encode(x.float(), source)
            rq = self._residual_quantize(z.float(), source, train=False)
        return rq.codes, rq.z_hat, torch.stack(rq.residual_norms, dim=1)

    def _check_codes(self, codes: Tensor, source: str) -> list[Codebook]:
        route = self.route(source)
        if not isinstance(codes, Tensor) or codes.ndim < 1 or codes.shape[-1] != len(route):
            shape = list(codes.shape) if isinstance(codes, Tensor) else type(codes).__name__
            raise InputError(f"source {source!r}: expected codes of shape [..., {len(route)}], got {shape}")
        for level, codebook in enumerate(route, start=1):
            codebook.check_codes(codes[..., level - 1], source, level)
        return route

    def codes_to_vectors(self, codes: Tensor, source: str) -> Tensor:
        """Code vector chosen at each level: codes [..., L] -> [..., L, code_dim].

        Differentiable w.r.t. the codebooks (used as token embeddings by the alignment model).
        """
        route = self._check_codes(codes, source)
        codes = codes.long()
        vectors = [F.embedding(codes[..., i], cb.embedding) for i, cb in enumerate(route)]
        return torch.stack(vectors, dim=-2)

    def decode_codes(self, codes: Tensor, source: str) -> Tensor:
        """codes [B, L] -> quantized z_hat [B, code_dim] (eq. 6: sum of codes_to_vectors over L)."""
        return self.codes_to_vectors(codes, source).sum(dim=-2)

    def reconstruct(self, codes: Tensor, source: str) -> Tensor:
        """codes [B, L] -> reconstruction of the source input [B, input_dims[source]] (raw units)."""
        return self.decode_quantized(self.decode_codes(codes, source), source)

    def decode_quantized(self, z_hat: Tensor, source: str) -> Tensor:
        """Quantized vector z_hat [B, code_dim] -> the source input it reconstructs, in the input's
        own units (a tabular source's standardisation undone)."""
        out = self.decoders[source](z_hat)
        return self.tabular_scalers[source].inverse(out) if source in self.tabular_scalers else out

    # ------------------------------------------------------------------ anti-collapse
    def reset_dead_codes(self, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
        """Dead-code reset of every codebook (see :meth:`Codebook.reset_dead_codes`).

        When ``optimizer`` is given, the optimiser state of the replaced rows is reset consistently
        (:func:`u2qt_core.quantization.reset_optimizer_rows`: no stale momentum, and no inflated
        step from a zeroed second moment under a late bias correction).
        Returns codebook name -> number of codes replaced.
        """
        counts: dict[str, int] = {}
        for name, codebook in self.named_codebooks().items():
            rows = codebook.reset_dead_codes(self.config.dead_code_threshold)
            counts[name] = int(rows.numel())
            if optimizer is not None and rows.numel():
                reset_optimizer_rows(optimizer, codebook.embedding, rows)
        return counts

    def training_state(self) -> dict[str, Tensor]:
        """Training-only codebook state (usage, k-means buffers, recent residuals), flat names."""
        return {
            f"codebooks.{key}.{name}": value
            for key, cb in self.codebooks.items()
            for name, value in cb.training_state().items()
        }

    def load_training_state(self, state: dict[str, Tensor]) -> None:
        """Inverse of :meth:`training_state`."""
        for key, cb in self.codebooks.items():
            prefix = f"codebooks.{key}."
            cb.load_training_state({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
