"""The U²QT-AAAI tokenizer: shared Transformer + causal Q-Former -> MRQ-VAE -> reverse decoder.

One user-day is a set of source *sequences*: a text source's document as its event lines, each
line embedded by the text encoder (``[T_s, d_text]``), the tabular source as its features read
one by one (``[F, 1]``). For every source present (paper, "Multi-source Encoding" to "Quantized
User Tokenizers", eqs. 3-9):

1. the shared Transformer encoder and the causal Q-Former with shared queries condense the
   sequence into ``q`` query states; a source listed in ``context_sources`` also reads the other
   sources named there (a source's codes depend on its context, never the reverse);
2. mean pooling + the shared MLP give ``bar H_s [B, pooled_dim]``;
3. the MRQ-VAE (:class:`~u2qt_core.mrqvae.MRQVAE`, shared levels then the source's own) maps it to
   the latent, quantizes residually and gives the codes ``[B, L]`` and ``z_hat [B, code_dim]``;
4. training only: the reverse Q-Former + Transformer decoder rebuild the input sequence from
   ``z_hat``; the loss is ``L_re`` (masked MSE over the real positions) + ``L_rq`` (eq. 9).

The night needs steps 1-3 only (:meth:`U2QTTokenizer.quantize_measured`). The MRQ-VAE part is the
same class FOUNDv2 uses, so codebook metrics, code statistics, dead-code resets and the token
format are shared; in a bundle it is saved as FOUNDv2's is, and the front end and decoder
(:data:`FRONTEND_FILE`) are hashed into the bundle's contract, hence into its version.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from u2qt_core.config import QFormerEncoderConfig
from u2qt_core.encoders.qformer import CausalQFormerEncoder, ReverseQFormerDecoder, masked_reconstruction_loss
from u2qt_core.errors import CheckpointError, InputError
from u2qt_core.mrqvae import MRQVAE

__all__ = ["U2QTTokenizer", "SequenceBatch", "U2QTLoss", "pad_sequences", "FRONTEND_FILE", "ARCHITECTURE"]

ARCHITECTURE = "u2qt_aaai"
FRONTEND_FILE = "frontend.safetensors"   # front end + reverse decoder tensors, beside the MRQ-VAE's


class SequenceBatch(NamedTuple):
    """``B`` user-days: every source's padded sequences and masks (True = real element).

    ``inputs {s: float32 [B, T_s, d_in_s]}``, ``masks {s: Bool [B, T_s]}``; a user-day without
    source ``s`` has an all-False mask row (it gets no codes for ``s``)."""

    inputs: dict[str, Tensor]
    masks: dict[str, Tensor]

    def present(self, source: str) -> Tensor:
        """``Bool [B]``: the user-days holding ``source``."""
        return self.masks[source].any(dim=1)


class U2QTLoss(NamedTuple):
    """One training step's loss and its parts (scalars), and the codes per source."""

    loss: Tensor            # recon_loss + rq_loss, averaged over the sources present
    recon_loss: Tensor      # L_re: masked MSE of the rebuilt sequences
    rq_loss: Tensor         # L_rq (eq. 9), from the MRQ-VAE
    codes: dict[str, Tensor]   # {s: Long [n_s, L]} for the user-days holding s (-1 during k-means warm-up)


def pad_sequences(sequences: list[np.ndarray | None], width: int, max_len: int) -> tuple[Tensor, Tensor]:
    """``B`` arrays ``[T_i, width]`` (None: the source is absent) -> ``(float32 [B, T, width],
    Bool [B, T])`` with ``T = min(max_len, max T_i)`` (at least 1); longer sequences keep their
    first ``max_len`` elements (a document's most frequent lines come first)."""
    lengths = [0 if s is None else min(len(s), max_len) for s in sequences]
    t = max(1, max(lengths, default=1))
    values = np.zeros((len(sequences), t, width), dtype=np.float32)
    mask = np.zeros((len(sequences), t), dtype=bool)
    for i, (seq, n) in enumerate(zip(sequences, lengths)):
        if n:
            values[i, :n] = np.asarray(seq, dtype=np.float32).reshape(-1, width)[:n]
            mask[i, :n] = True
    return torch.from_numpy(values), torch.from_numpy(mask)


class U2QTTokenizer(nn.Module):
    """Front end (``frontend``) + MRQ-VAE (``mrqvae``) + reverse decoder (``decoder``).

    ``quantize_measured(batch)`` -> ``{s: (codes Long [B, L], residual [B])}`` (rows of user-days
    without ``s`` hold codes ``-1``); ``forward(batch)`` -> :class:`U2QTLoss` (training)."""

    def __init__(self, frontend: QFormerEncoderConfig, mrqvae: MRQVAE) -> None:
        super().__init__()
        if sorted(frontend.input_dims) != sorted(mrqvae.config.sources):
            raise InputError(f"front-end sources {sorted(frontend.input_dims)} != MRQ-VAE sources {mrqvae.config.sources}")
        self.frontend_config = frontend
        self.frontend = CausalQFormerEncoder(frontend)
        self.mrqvae = mrqvae
        # the decoder reads z_hat (code_dim wide), not the pooled vector
        self.decoder = ReverseQFormerDecoder(frontend.model_copy(update={"out_dim": mrqvae.config.code_dim}))

    @property
    def config(self):
        """The MRQ-VAE's config (sources, levels, codes): what the token format needs."""
        return self.mrqvae.config

    @property
    def tabular_sources(self) -> list[str]:
        return list(self.frontend_config.tabular_sources)

    # the codebooks, as an MRQVAE shows them (token features read them)
    def named_codebooks(self):
        return self.mrqvae.named_codebooks()

    def route(self, source: str):
        return self.mrqvae.route(source)

    def route_names(self, source: str) -> list[str]:
        return self.mrqvae.route_names(source)

    def pooled(self, batch: SequenceBatch) -> dict[str, Tensor]:
        """``bar H_s = M(P(Q^J_s))`` for every source of the batch: ``{s: [B, pooled_dim]}``."""
        return self.frontend.pooled(batch.inputs, batch.masks)

    def forward(self, batch: SequenceBatch) -> U2QTLoss:
        """``L_re + L_rq`` over the sources present in the batch (mean over sources)."""
        pooled = self.pooled(batch)
        losses, recons, rqs, codes = [], [], [], {}
        for source, vectors in pooled.items():
            rows = batch.present(source)
            if not bool(rows.any()):
                continue
            out = self.mrqvae(vectors[rows], source)
            mask = batch.masks[source][rows]
            rebuilt = self.decoder(out.quantized, source, mask)
            recon = masked_reconstruction_loss(rebuilt, batch.inputs[source][rows], mask)
            losses.append(recon + out.rq_loss)
            recons.append(recon)
            rqs.append(out.rq_loss)
            codes[source] = out.codes
        if not losses:
            raise InputError("a training batch holds no source")
        return U2QTLoss(torch.stack(losses).mean(), torch.stack(recons).mean(), torch.stack(rqs).mean(), codes)

    @torch.no_grad()
    def quantize_measured(self, batch: SequenceBatch) -> dict[str, tuple[Tensor, Tensor]]:
        """Eval-mode codes and relative residual norms ``||r^{L+1}|| / ||z||`` per source present:
        ``{s: (Long [B, L], float [B])}``; rows without ``s`` hold codes -1 and residual NaN."""
        out: dict[str, tuple[Tensor, Tensor]] = {}
        for source, vectors in self.pooled(batch).items():
            rows = batch.present(source)
            codes = torch.full((vectors.shape[0], self.config.num_levels), -1, dtype=torch.long, device=vectors.device)
            residual = torch.full((vectors.shape[0],), float("nan"), device=vectors.device)
            if bool(rows.any()):
                c, r = self.mrqvae.quantize_measured(vectors[rows], source)
                codes[rows], residual[rows] = c.long(), r.to(residual.dtype)
            out[source] = (codes, residual)
        return out

    # ------------------------------------------------------------------ saving beside the MRQ-VAE

    def frontend_state(self) -> dict[str, Tensor]:
        """The front end's and decoder's tensors (the MRQ-VAE's are saved by its own checkpoint)."""
        return {f"{part}.{k}": v.detach().cpu().contiguous()
                for part in ("frontend", "decoder") for k, v in getattr(self, part).state_dict().items()}

    def architecture_contract(self) -> dict:
        """What a bundle's contract records of the front end: its config and a hash of its tensors
        (so the tokenizer version, which hashes the contract, covers the whole model)."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.frontend_state().items()):
            digest.update(name.encode())
            digest.update(tensor.float().numpy().tobytes())
        return {"name": ARCHITECTURE, "frontend": self.frontend_config.model_dump(mode="json"),
                "frontend_sha256": digest.hexdigest()[:16]}

    def save_frontend(self, folder: Path) -> None:
        save_file(self.frontend_state(), str(Path(folder) / FRONTEND_FILE))

    @classmethod
    def from_bundle(cls, folder: Path, mrqvae: MRQVAE, architecture: dict, map_location: str = "cpu") -> "U2QTTokenizer":
        """Rebuild from a bundle's MRQ-VAE, its contract's ``architecture`` and :data:`FRONTEND_FILE`;
        the tensors must hash to the contract's ``frontend_sha256``."""
        path = Path(folder) / FRONTEND_FILE
        if not path.is_file():
            raise CheckpointError(f"{path}: missing: a {ARCHITECTURE} bundle holds its front end there")
        model = cls(QFormerEncoderConfig.model_validate(architecture["frontend"]), mrqvae)
        state = load_file(str(path), device=map_location)
        for part in ("frontend", "decoder"):
            getattr(model, part).load_state_dict({k.split(".", 1)[1]: v for k, v in state.items() if k.startswith(part + ".")})
        if model.architecture_contract()["frontend_sha256"] != architecture.get("frontend_sha256"):
            raise CheckpointError(f"{path}: the front end's tensors do not match the bundle's contract (file changed?)")
        return model.to(map_location).eval()
