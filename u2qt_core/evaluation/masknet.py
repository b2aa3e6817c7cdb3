"""MaskNet CTR model (Wang, She and Zhang 2021, "MaskNet: Introducing Feature-Wise Multiplication
to CTR Ranking Models by Instance-Guided Mask", arXiv:2102.07619) for FOUNDv2 appendix C.

No maintained PyTorch package fits this project's pinned stack (the reference implementations
live in TensorFlow / DeepCTR-Torch, which pins old torch versions), so this is a compact,
faithful re-implementation of the paper's **serial MaskNet** (``mode="serial"``, SerMaskNet)
and **parallel MaskNet** (``mode="parallel"``, ParaMaskNet):

* feature embedding layer: every categorical field ``i`` -> ``e_i`` in ``R^k``;
  ``V_emb = concat(e_1..e_m)`` ``[B, m*k]``;
* instance-guided mask (paper eq. 4): ``V_mask = W_d2 ReLU(W_d1 V_emb + b_d1) + b_d2``; the
  aggregation layer is ``reduction_ratio`` times wider than ``V_emb``, the projection layer as wide
  as the masked input; the mask is always computed from ``V_emb`` (the instance);
* MaskBlock on feature embedding (eqs. 7-8): ``V_out = ReLU(LN(W_i (V_mask ⊙ LN_EMB(V_emb))))``
  with LN_EMB a layer norm of each field embedding separately;
* MaskBlock on MaskBlock (eqs. 9-10): ``V_out = ReLU(LN(W_i (V_mask ⊙ V_out_prev)))``;
* SerMaskNet stacks blocks (first on the embedding, then on the previous block);
  ParaMaskNet runs blocks on the embedding in parallel, concatenates them and adds an MLP;
  a linear layer + sigmoid gives the click probability (log loss).

User tokens (FOUNDv2 eq. 16, ``UserRep = [Code_1..Code_n]``) enter as extra fields: for every
(source, level) one field whose embedding is the mean of the embeddings of the codes the user
got at that level on the history days (an EmbeddingBag-style mean; zeros when the user has no
row of that source).

Metrics:

* AUC: ``sklearn.metrics.roc_auc_score`` over all test impressions;
* HR@k (:func:`hit_rate_at_k`): for every test user with at least one click, the user's
  candidates (their test impressions, plus ``sampled_negatives`` catalogue items they were not
  shown, label 0) are ranked by predicted score (ties: candidate order); the user's hit rate is
  the share of their clicked items ranked in the top ``k``; HR@k is the mean over those users.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn

from u2qt_core.errors import InputError

__all__ = ["MaskNet", "MaskBlock", "CTRData", "CTRResult", "train_masknet", "predict", "hit_rate_at_k", "user_token_bags"]

logger = logging.getLogger(__name__)


class MaskBlock(nn.Module):
    """One MaskBlock: instance-guided mask on its input, then a LayerNorm-ed feed-forward layer."""

    def __init__(self, emb_dim: int, in_dim: int, out_dim: int, reduction_ratio: float, *, on_embedding: bool,
                 num_fields: int = 1) -> None:
        super().__init__()
        hidden = max(1, int(round(reduction_ratio * emb_dim)))
        self.mask = nn.Sequential(nn.Linear(emb_dim, hidden), nn.ReLU(), nn.Linear(hidden, in_dim))
        self.on_embedding = on_embedding
        self.num_fields = num_fields
        if on_embedding:
            self.ln_emb = nn.LayerNorm(in_dim // num_fields)
        self.hidden = nn.Linear(in_dim, out_dim, bias=False)
        self.ln_hid = nn.LayerNorm(out_dim)

    def forward(self, v_emb: Tensor, v_in: Tensor) -> Tensor:
        if self.on_embedding:
            b = v_in.shape[0]
            v_in = self.ln_emb(v_in.view(b, self.num_fields, -1)).view(b, -1)
        masked = self.mask(v_emb) * v_in
        return torch.relu(self.ln_hid(self.hidden(masked)))


class MaskNet(nn.Module):
    """Serial or parallel MaskNet over categorical fields plus optional user-token bag fields.

    Args:
        field_sizes: vocabulary size of every categorical field.
        embed_dim: ``k``.
        num_blocks / block_dim / reduction_ratio: MaskBlock stack.
        token_fields: number of token bag fields (``sources * levels``), 0 for none.
        token_vocab: codes per token field (indices ``0..token_vocab-1``).
        mode: ``serial`` or ``parallel``.
    """

    def __init__(self, field_sizes: list[int], *, embed_dim: int = 8, num_blocks: int = 3, block_dim: int = 64,
                 reduction_ratio: float = 2.0, token_fields: int = 0, token_vocab: int = 0,
                 token_embed_dim: int | None = None, mode: str = "serial") -> None:
        super().__init__()
        if mode not in ("serial", "parallel"):
            raise InputError(f"mode must be serial or parallel, got {mode!r}")
        self.field_sizes = list(field_sizes)
        offsets = np.concatenate([[0], np.cumsum(self.field_sizes)[:-1]]).astype(np.int64)
        self.register_buffer("offsets", torch.as_tensor(offsets))
        self.embedding = nn.Embedding(int(sum(self.field_sizes)), embed_dim)
        nn.init.normal_(self.embedding.weight, std=0.05)
        self.token_fields = token_fields
        self.token_vocab = token_vocab
        if token_fields:
            tdim = token_embed_dim or embed_dim
            if tdim != embed_dim:
                raise InputError("token_embed_dim must equal embed_dim (fields share the per-field layer norm)")
            # index 0 is padding; field f code c -> 1 + f * token_vocab + c
            self.token_embedding = nn.Embedding(1 + token_fields * token_vocab, embed_dim, padding_idx=0)
            nn.init.normal_(self.token_embedding.weight, std=0.05)
            with torch.no_grad():
                self.token_embedding.weight[0].zero_()
        num_fields = len(self.field_sizes) + token_fields
        emb_dim = num_fields * embed_dim
        self.mode = mode
        if mode == "serial":
            blocks = [MaskBlock(emb_dim, emb_dim, block_dim, reduction_ratio, on_embedding=True, num_fields=num_fields)]
            blocks += [MaskBlock(emb_dim, block_dim, block_dim, reduction_ratio, on_embedding=False)
                       for _ in range(num_blocks - 1)]
            self.blocks = nn.ModuleList(blocks)
            self.head = nn.Linear(block_dim, 1)
        else:
            self.blocks = nn.ModuleList(
                MaskBlock(emb_dim, emb_dim, block_dim, reduction_ratio, on_embedding=True, num_fields=num_fields)
                for _ in range(num_blocks))
            self.head = nn.Sequential(nn.Linear(num_blocks * block_dim, block_dim), nn.ReLU(), nn.Linear(block_dim, 1))

    def embed(self, fields: Tensor, tokens: Tensor | None = None) -> Tensor:
        """``fields Long[B, m]``, ``tokens Long[B, token_fields, bag]`` (-1 = empty) -> ``V_emb``."""
        parts = [self.embedding(fields + self.offsets)]  # [B, m, k]
        if self.token_fields:
            if tokens is None:
                raise InputError("this MaskNet has token fields: pass tokens")
            f = torch.arange(self.token_fields, device=tokens.device)[None, :, None]
            index = torch.where(tokens >= 0, 1 + f * self.token_vocab + tokens, torch.zeros_like(tokens))
            vecs = self.token_embedding(index)  # [B, T, bag, k]
            count = (tokens >= 0).sum(dim=-1, keepdim=True).clamp(min=1).to(vecs.dtype)
            parts.append(vecs.sum(dim=2) / count)
        return torch.cat(parts, dim=1).flatten(1)

    def forward(self, fields: Tensor, tokens: Tensor | None = None) -> Tensor:
        """Click logits ``[B]``."""
        v_emb = self.embed(fields, tokens)
        if self.mode == "serial":
            h = v_emb
            for block in self.blocks:
                h = block(v_emb, h)
        else:
            h = torch.cat([block(v_emb, v_emb) for block in self.blocks], dim=1)
        return self.head(h).squeeze(-1)


@dataclass
class CTRData:
    """Impressions: ``fields`` int64 ``[N, m]`` per-field category indices, ``users`` int64 [N]
    (row into the user token table, or -1), ``clicked`` [N] 0/1, ``user_ids`` [N] for HR@k."""

    fields: np.ndarray
    users: np.ndarray
    clicked: np.ndarray
    user_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.fields.shape[0])


@dataclass
class CTRResult:
    model: MaskNet
    best_epoch: int
    valid_auc: float
    history: list[dict]


def user_token_bags(rows_user: dict[str, np.ndarray], codes: dict[str, np.ndarray], *, n_users: int,
                    sources: list[str], max_bag: int) -> np.ndarray:
    """``int64 [n_users, len(sources) * L, max_bag]``: per (source, level) the codes of the user's
    rows (most recent last; at most ``max_bag``), ``-1`` padded. Rows must be in day order per user."""
    L = next(c.shape[1] for s, c in codes.items() if s in sources and len(c))
    out = np.full((n_users, len(sources) * L, max_bag), -1, dtype=np.int64)
    for k, source in enumerate(sources):
        if source not in codes or not len(codes[source]):
            continue
        users = np.asarray(rows_user[source], dtype=np.int64)
        c = np.asarray(codes[source], dtype=np.int64)
        order = np.argsort(users, kind="stable")
        users, c = users[order], c[order]
        starts = np.searchsorted(users, users, side="left")
        slot = np.arange(len(users)) - starts
        counts = np.bincount(users, minlength=n_users)
        slot = slot - np.maximum(counts[users] - max_bag, 0)  # keep the most recent max_bag
        keep = slot >= 0
        for level in range(L):
            out[users[keep], k * L + level, slot[keep]] = c[keep, level]
    return out


def _batches(n: int, batch_size: int, rng: np.random.Generator | None):
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def _tensors(data: CTRData, index: np.ndarray, bags: np.ndarray | None) -> tuple[Tensor, Tensor | None]:
    fields = torch.as_tensor(data.fields[index])
    if bags is None:
        return fields, None
    users = data.users[index]
    tok = np.where(users[:, None, None] >= 0, bags[np.maximum(users, 0)], -1)
    return fields, torch.as_tensor(tok)


@torch.no_grad()
def predict(model: MaskNet, data: CTRData, bags: np.ndarray | None = None, batch_size: int = 4096) -> np.ndarray:
    """Click scores (logits) ``[N]``."""
    model.eval()
    out = np.empty(len(data), dtype=np.float64)
    for index in _batches(len(data), batch_size, None):
        fields, tokens = _tensors(data, index, bags)
        out[index] = model(fields, tokens).double().numpy()
    return out


def train_masknet(train: CTRData, valid: CTRData, field_sizes: list[int], *, bags: np.ndarray | None = None,
                  token_vocab: int = 0, embed_dim: int = 8, num_blocks: int = 3, block_dim: int = 64,
                  reduction_ratio: float = 2.0, epochs: int = 4, batch_size: int = 1024, lr: float = 1e-3,
                  weight_decay: float = 0.0, seed: int = 0, mode: str = "serial") -> CTRResult:
    """Adam on log loss; keeps the epoch with the best validation AUC."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = MaskNet(field_sizes, embed_dim=embed_dim, num_blocks=num_blocks, block_dim=block_dim,
                    reduction_ratio=reduction_ratio, token_fields=0 if bags is None else bags.shape[1],
                    token_vocab=token_vocab, mode=mode)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    labels = torch.as_tensor(train.clicked, dtype=torch.float32)
    best = (-1.0, 0, copy.deepcopy(model.state_dict()))
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        total, n = 0.0, 0
        for index in _batches(len(train), batch_size, rng):
            fields, tokens = _tensors(train, index, bags)
            loss = loss_fn(model(fields, tokens), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
            n += len(index)
        auc = float(roc_auc_score(valid.clicked, predict(model, valid, bags)))
        history.append({"epoch": epoch, "train_logloss": total / max(n, 1), "valid_auc": auc})
        logger.info("masknet epoch %d: train logloss %.4f, valid AUC %.4f", epoch, total / max(n, 1), auc)
        if auc > best[0]:
            best = (auc, epoch, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    model.eval()
    return CTRResult(model=model, best_epoch=best[1], valid_auc=best[0], history=history)


def hit_rate_at_k(user_ids: np.ndarray, scores: np.ndarray, clicked: np.ndarray, k: int) -> float:
    """HR@k as defined in the module docstring (mean over users with at least one click)."""
    user_ids, scores, clicked = np.asarray(user_ids), np.asarray(scores, dtype=np.float64), np.asarray(clicked).astype(bool)
    if not (len(user_ids) == len(scores) == len(clicked)):
        raise InputError("user_ids, scores and clicked must have the same length")
    if k < 1:
        raise InputError("k must be >= 1")
    order = np.lexsort((np.arange(len(scores)), -scores, user_ids))  # by user, score desc, candidate order
    u, c = user_ids[order], clicked[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    rank = np.arange(len(u)) - np.repeat(starts, np.diff(np.r_[starts, len(u)]))
    per_user_clicks = np.add.reduceat(c.astype(np.int64), starts)
    per_user_hits = np.add.reduceat((c & (rank < k)).astype(np.int64), starts)
    has = per_user_clicks > 0
    if not has.any():
        raise InputError("no user has a clicked candidate")
    return float(np.mean(per_user_hits[has] / per_user_clicks[has]))
