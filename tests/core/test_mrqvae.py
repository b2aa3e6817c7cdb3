"""The MRQ-VAE model: eqs. 3-8, straight-through gradients, variants, input checks."""

from __future__ import annotations

import pytest
import torch

from tests.core import toy_mrqvae
from u2qt_core.config import MRQVAEConfig
from u2qt_core.errors import InputError
from u2qt_core.mrqvae import MRQVAE, mean_loss


SOURCES = toy_mrqvae.SOURCES
make_data = toy_mrqvae.make_data


def tiny_config(**overrides: object) -> MRQVAEConfig:
    """The shared tiny config, with dead codes checked every 10 steps."""
    return toy_mrqvae.tiny_config(**{"dead_code_window": 10, **overrides})


def warm_up(model: MRQVAE, data: dict[str, torch.Tensor], steps: int = 40, lr: float = 3e-3) -> MRQVAE:
    """A few AdamW steps on random mini-batches (initialises every codebook)."""
    g = torch.Generator().manual_seed(1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        batch = {s: x[torch.randint(0, x.shape[0], (32,), generator=g)] for s, x in data.items()}
        loss = mean_loss(model.forward_batch(batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 10 == 0:
            model.reset_dead_codes(opt)
    model.eval()
    return model


@pytest.fixture(scope="module")
def trained() -> tuple[MRQVAE, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    data = make_data()
    return warm_up(MRQVAE(tiny_config()), data), data


def test_decode_codes_equals_forward_quantized(trained: tuple[MRQVAE, dict[str, torch.Tensor]]) -> None:
    model, data = trained
    assert model.uninitialized_codebooks() == []
    for source in SOURCES:
        out = model(data[source], source)
        assert out.codes.shape == (128, 4)
        assert torch.equal(out.codes, model.quantize(data[source], source))
        decoded = model.decode_codes(out.codes, source)
        torch.testing.assert_close(decoded, out.quantized, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.codes_to_vectors(out.codes, source).sum(-2), decoded)
        torch.testing.assert_close(model.reconstruct(out.codes, source), out.reconstruction, atol=1e-5, rtol=1e-5)
        # the quantized vector differs from the latent (it really is quantised)
        assert not torch.allclose(out.quantized, out.latent)


def test_residual_norm_does_not_grow_across_levels(trained: tuple[MRQVAE, dict[str, torch.Tensor]]) -> None:
    model, data = trained
    for source in SOURCES:
        _, _, norms = model.quantize_with_residuals(data[source], source)
        means = norms.mean(0)  # ||r^1|| .. ||r^{L+1}||
        assert means.shape == (5,)
        assert torch.all(means[1:] <= means[:-1] + 1e-6), f"{source}: {means.tolist()}"
        assert means[-1] < 0.8 * means[0]


def test_gradients_reach_tabular_encoder_and_shared_mlp(trained: tuple[MRQVAE, dict[str, torch.Tensor]]) -> None:
    model, data = trained
    model.zero_grad()
    out = model(data["tabular"][:16], "tabular")
    out.recon_loss.backward()  # reconstruction only: the path goes through the straight-through estimator
    for name, module in [("tabular encoder", model.tabular_encoders["tabular"]), ("shared MLP", model.shared_encoder)]:
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    # eq. 8's codebook term trains the codebooks; the reconstruction does not
    assert model.codebooks["shared_1"].embedding.grad is None or float(model.codebooks["shared_1"].embedding.grad.abs().sum()) == 0
    model.zero_grad()
    model(data["tabular"][:16], "tabular").rq_loss.backward()
    assert float(model.codebooks["shared_1"].embedding.grad.abs().sum()) > 0
    assert float(model.codebooks["src_tabular_3"].embedding.grad.abs().sum()) > 0
    assert float(model.shared_encoder[0].weight.grad.abs().sum()) > 0  # commitment term
    model.zero_grad()


def test_codes_to_vectors_is_differentiable_wrt_codebooks(trained: tuple[MRQVAE, dict[str, torch.Tensor]]) -> None:
    model, _ = trained
    model.zero_grad()
    codes = torch.tensor([[[0, 1, 2, 3], [4, 5, 6, 7]]])  # [1, 2, L]
    vectors = model.codes_to_vectors(codes, "spm")
    assert vectors.shape == (1, 2, 4, 8)
    vectors.sum().backward()
    grad = model.codebooks["shared_1"].embedding.grad
    assert grad is not None and float(grad[0].abs().sum()) > 0 and float(grad[2].abs().sum()) == 0
    assert float(model.codebooks["src_spm_4"].embedding.grad[7].abs().sum()) > 0
    model.zero_grad()


@pytest.mark.parametrize("variant", ["multiview", "shared_only", "specific_only", "union"])
def test_each_variant_gives_codes_in_range(variant: str) -> None:
    torch.manual_seed(0)
    data = make_data(64)
    model = warm_up(MRQVAE(tiny_config(variant=variant)), data, steps=12)
    assert model.uninitialized_codebooks() == []
    k, n_src = 16, len(SOURCES)
    sizes = model.codebook_sizes()
    for i, source in enumerate(SOURCES):
        codes = model.quantize(data[source], source)
        assert codes.shape == (64, 4) and codes.dtype == torch.long
        if variant == "union":
            assert set(sizes) == {f"union.{level}" for level in range(1, 5)}
            assert all(v == k * (1 + n_src) for v in sizes.values())
            own = (codes >= k * (1 + i)) & (codes < k * (2 + i))
            assert torch.all((codes < k) | own) and torch.all(codes >= 0)
        else:
            assert torch.all((codes >= 0) & (codes < k))
    expected_names = {
        "multiview": {"shared.1", "shared.2"} | {f"{s}.{lv}" for s in SOURCES for lv in (3, 4)},
        "shared_only": {f"shared.{lv}" for lv in range(1, 5)},
        "specific_only": {f"{s}.{lv}" for s in SOURCES for lv in range(1, 5)},
    }
    if variant in expected_names:
        assert set(sizes) == expected_names[variant]


def test_union_masks_other_sources_blocks() -> None:
    torch.manual_seed(0)
    model = MRQVAE(tiny_config(variant="union", kmeans_init=False))
    with pytest.raises(InputError, match=r"code 40 is out of range"):
        model.decode_codes(torch.tensor([[0, 0, 0, 40]]), "bill")  # 40 is in spm's block [32, 48)
    model.decode_codes(torch.tensor([[0, 16, 31, 5]]), "bill")  # shared block + bill block [16, 32)


def test_warm_up_passes_residual_through_until_initialised() -> None:
    torch.manual_seed(0)
    model = MRQVAE(tiny_config())
    model.train()
    out = model(make_data(8)["bill"], "bill")  # 8 < 2 * K rows: nothing initialised yet
    assert torch.all(out.codes == -1)
    torch.testing.assert_close(out.quantized, out.latent)
    assert float(out.rq_loss) == 0.0 and torch.isfinite(out.loss)
    assert model.uninitialized_codebooks() != []


def test_input_errors_are_clear(trained: tuple[MRQVAE, dict[str, torch.Tensor]]) -> None:
    model, data = trained
    with pytest.raises(InputError, match=r"unknown source 'mail'.*known sources"):
        model.quantize(data["bill"], "mail")
    with pytest.raises(InputError, match=r"source 'tabular': expected input of shape \[B, 5\], got \[128, 12\]"):
        model.quantize(data["bill"], "tabular")
    bad = data["spm"][:4].clone()
    bad[2, 3] = float("nan")
    with pytest.raises(InputError, match=r"source 'spm': non-finite value .* in row 2"):
        model(bad, "spm")
    with pytest.raises(InputError, match=r"expected codes of shape \[\.\.\., 4\]"):
        model.decode_codes(torch.zeros(3, 2, dtype=torch.long), "bill")
    with pytest.raises(InputError, match=r"level 3 .*code 16 is out of range"):
        model.decode_codes(torch.tensor([[0, 0, 16, 0]]), "bill")
    with pytest.raises(InputError, match="unknown source"):
        model.forward_batch({"bill": data["bill"], "mail": data["bill"]})


def test_bf16_autocast_keeps_fp32_distances(trained: tuple[MRQVAE, dict[str, torch.Tensor]]) -> None:
    model, data = trained
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        codes = model.quantize(data["bill"], "bill")  # eval path ignores autocast entirely
        out = model(data["bill"], "bill")
    assert torch.equal(codes, model.quantize(data["bill"], "bill"))
    assert out.codes.shape == (128, 4) and torch.isfinite(out.loss)


@pytest.mark.parametrize("variant", ["multiview", "union", "shared_only", "specific_only"])
def test_lean_quantize_equals_reference_codes(variant: str) -> None:
    """The inference path (views, one addmm) gives exactly the full path's codes."""
    torch.manual_seed(0)
    data = make_data(256, seed=3)
    model = warm_up(MRQVAE(tiny_config(variant=variant)), data, steps=20)
    for source in SOURCES:
        lean = model.quantize(data[source], source)
        assert torch.equal(lean, model.quantize_reference(data[source], source))
        assert torch.equal(lean, model.quantize_with_residuals(data[source], source)[0])
        # one row at a time or the whole batch: the same codes
        assert torch.equal(torch.cat([model.quantize(data[source][i:i + 1], source) for i in range(8)]), lean[:8])


def test_lean_quantize_bit_identical_at_realistic_widths() -> None:
    """At gemm sizes where a fused addmm rounds differently, the lean path still gives the same
    distances (hence codes, near ties included) as the reference path."""
    torch.manual_seed(0)
    cfg = tiny_config(input_dims={"bill": 64, "spm": 64, "tabular": 5}, embed_dim=64, code_dim=256,
                      num_codes=512, hidden_dim=64, kmeans_init=False)
    model = MRQVAE(cfg).eval()
    with torch.no_grad():  # small codebooks: deep levels see tiny residuals and close distances
        for cb in model.codebooks.values():
            cb.embedding.mul_(0.05)
    x = torch.randn(1024, 64)
    assert torch.equal(model.quantize(x, "bill"), model.quantize_reference(x, "bill"))


def test_shared_coverage_counts_each_sources_share_of_the_shared_codes(trained: tuple[MRQVAE, dict[str, torch.Tensor]]) -> None:
    """codebook_metrics' shared_coverage: distinct shared codes a source uses / min(K, its rows),
    for the shared levels only (a source of 5 rows can use at most 5 codes)."""
    import numpy as np

    from u2qt_core.metrics import codebook_metrics

    model, data = trained
    few = {"bill": data["bill"][:5].numpy(), "spm": data["spm"].numpy()}
    metrics = codebook_metrics(model, few)
    shared = [level for level in range(1, model.config.num_levels + 1) if model.config.level_kind(level) == "shared"]
    for source, x in few.items():
        coverage = metrics["per_source"][source]["shared_coverage"]
        assert sorted(coverage) == shared
        codes = model.quantize(torch.from_numpy(x), source).numpy()
        for level in shared:
            expected = len(np.unique(codes[:, level - 1])) / min(model.config.num_codes, len(x))
            assert coverage[level] == pytest.approx(expected) and 0 < coverage[level] <= 1
    specific_only = MRQVAE(tiny_config(variant="specific_only"))
    assert codebook_metrics(specific_only, few)["per_source"]["bill"]["shared_coverage"] == {}


def test_level_utilization_is_bounded_by_the_rows_a_level_saw(trained: tuple[MRQVAE, dict[str, torch.Tensor]]) -> None:
    """per_level's row_bounded_utilization: codes used / min(codes of the level, rows): seven rows
    cannot use 5 % of a large codebook, and a promotion gate must not read that as collapse."""
    from u2qt_core.metrics import codebook_metrics

    model, data = trained
    few = {"bill": data["bill"][:3].numpy(), "spm": data["spm"][:4].numpy()}
    for level in codebook_metrics(model, few)["per_level"]:
        assert 0 < level["used"] <= 7
        assert level["row_bounded_utilization"] == pytest.approx(level["used"] / min(level["size"], 7))
        assert level["utilization"] == pytest.approx(level["used"] / level["size"])
