"""Codebooks: buffered k-means initialisation (never from < K points), routing, dead-code reset."""

from __future__ import annotations

import pytest
import torch

from tests.core import toy_mrqvae
import u2qt_core.quantization as quantization
from u2qt_core.mrqvae import MRQVAE, mean_loss
from u2qt_core.quantization import Codebook, kmeans, nearest_code


SOURCES = toy_mrqvae.SOURCES
make_data = toy_mrqvae.make_data
tiny_config = toy_mrqvae.tiny_config


@pytest.fixture
def kmeans_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the number of points every k-means initialisation receives."""
    calls: list[int] = []
    real = quantization.kmeans

    def spy(samples: torch.Tensor, k: int, iters: int) -> torch.Tensor:
        calls.append(samples.shape[0])
        return real(samples, k, iters)

    monkeypatch.setattr(quantization, "kmeans", spy)
    return calls


def test_kmeans_waits_for_multiple_times_k_samples(kmeans_calls: list[int]) -> None:
    torch.manual_seed(0)
    cb = Codebook("shared.1", num_codes=16, code_dim=4, segment_sources=[["a"]], kmeans_buffer_multiple=4)
    for _ in range(6):  # 60 < 4 * 16 residuals: still waiting, and passing through
        assert cb.lookup(torch.randn(10, 4), "a", train=True) is None
    assert not bool(cb.initialized[0]) and kmeans_calls == [] and cb.buffered() == 60
    codes, vectors = cb.lookup(torch.randn(10, 4), "a", train=True)
    assert bool(cb.initialized[0]) and kmeans_calls == [70] and cb.buffered() == 0
    assert codes.shape == (10,) and vectors.shape == (10, 4)


def test_kmeans_never_initialises_from_fewer_than_k_points(kmeans_calls: list[int]) -> None:
    torch.manual_seed(0)
    cb = Codebook("bill.3", num_codes=16, code_dim=4, segment_sources=[["a"]], kmeans_buffer_multiple=1)
    for _ in range(3):  # 15 points < K = 16
        assert cb.lookup(torch.randn(5, 4), "a", train=True) is None
    assert kmeans_calls == []
    assert cb.lookup(torch.randn(5, 4), "a", train=True) is not None
    assert kmeans_calls == [20]
    with pytest.raises(ValueError, match="at least k=16"):
        kmeans(torch.randn(15, 4), 16, 3)


def test_eval_lookup_never_feeds_the_buffer() -> None:
    cb = Codebook("shared.1", num_codes=4, code_dim=3, segment_sources=[["a"]])
    codes, _ = cb.lookup(torch.randn(50, 3), "a", train=False)
    assert codes.shape == (50,) and cb.buffered() == 0 and not bool(cb.initialized[0])


def test_shared_buffers_see_all_sources_specific_only_their_own(kmeans_calls: list[int]) -> None:
    torch.manual_seed(0)
    model = MRQVAE(tiny_config())  # K = 16, multiple 2: 32 residuals per codebook
    model.train()
    data = make_data(20)
    model(data["bill"], "bill")
    model(data["spm"], "spm")  # 40 >= 32: shared.1 initialises from bill + spm residuals
    shared1, shared2 = model.codebooks["shared_1"], model.codebooks["shared_2"]
    assert bool(shared1.initialized[0]) and kmeans_calls == [40]
    # levels are initialised in order: shared.2 only got the spm batch after shared.1 was ready
    assert shared2.buffered() == 20 and not bool(shared2.initialized[0])
    model(data["bill"], "bill")  # shared.2 reaches 40 and initialises; bill.3 starts filling
    assert bool(shared2.initialized[0]) and kmeans_calls == [40, 40]
    assert model.codebooks["src_bill_3"].buffered() == 20
    assert model.codebooks["src_spm_3"].buffered() == 0 and model.codebooks["src_tabular_3"].buffered() == 0
    model(data["bill"], "bill")  # bill.3 reaches 40: initialised from bill residuals only
    assert bool(model.codebooks["src_bill_3"].initialized[0])
    assert not bool(model.codebooks["src_spm_3"].initialized[0])
    assert kmeans_calls == [40, 40, 40]


def test_union_segments_initialise_from_their_own_sources(kmeans_calls: list[int]) -> None:
    torch.manual_seed(0)
    model = MRQVAE(tiny_config(variant="union"))
    model.train()
    data = make_data(40)
    model(data["bill"], "bill")  # shared block and bill block of union.1 both get 40 >= 32
    union1 = model.codebooks["union_1"]
    assert union1.initialized.tolist() == [True, True, False, False]
    model(data["spm"][:20], "spm")  # shared block is ready, spm block holds 20 < 32: pass-through
    assert union1.initialized.tolist() == [True, True, False, False] and union1.buffered(2) == 20
    assert all(n >= 32 for n in kmeans_calls)


def utilization(model: MRQVAE, data: dict[str, torch.Tensor], key: str, level: int) -> float:
    codes = torch.cat([model.quantize(x, s)[:, level - 1] for s, x in data.items()])
    return codes.unique().numel() / model.config.num_codes


def test_dead_code_reset_revives_a_collapsed_codebook() -> None:
    torch.manual_seed(0)
    data = make_data(128)
    model = MRQVAE(tiny_config(kmeans_init=False))
    cb = model.codebooks["shared_1"]
    with torch.no_grad():
        cb.embedding[:] = cb.embedding[0].clone()  # every code identical: total collapse
    assert utilization(model, data, "shared_1", 1) == 1 / 16
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for step in range(1, 7):
        batch = {s: x[torch.randint(0, 128, (32,), generator=g)] for s, x in data.items()}
        loss = mean_loss(model.forward_batch(batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 3 == 0:
            counts = model.reset_dead_codes(opt)
            if step == 3:
                assert counts["shared.1"] == 15  # all codes but the one every row chose
                # no stale momentum; the second moment is the kept row's (a warm estimate)
                state = opt.state[cb.embedding]
                assert float(state["exp_avg"][1:].abs().sum()) == 0.0
                assert torch.allclose(state["exp_avg_sq"][1:], state["exp_avg_sq"][:1].expand(15, -1))
                assert int(cb.usage.sum()) == 0  # new window
    assert utilization(model, data, "shared_1", 1) >= 6 / 16


def test_dead_codes_are_replaced_by_residuals_of_served_sources_only() -> None:
    torch.manual_seed(0)
    cb = Codebook("bill.3", num_codes=4, code_dim=3, segment_sources=[["bill"]], kmeans_init=False)
    with torch.no_grad():
        cb.embedding[:] = torch.tensor([0.0, 0.0, 0.0])
    residuals = torch.full((6, 3), 5.0) + torch.arange(6.0).unsqueeze(1)
    cb.lookup(residuals, "bill", train=True)  # everything picks code 0; codes 1..3 are dead
    rows = cb.reset_dead_codes(threshold=1)
    assert sorted(rows.tolist()) == [1, 2, 3]
    for row in rows.tolist():  # each new code is one of the observed (recent) residuals
        assert any(torch.equal(cb.embedding[row].detach(), r) for r in residuals)


def test_nearest_code_is_fp32_under_autocast() -> None:
    x = torch.randn(64, 8).bfloat16()
    codebook = torch.randn(32, 8)
    expected = torch.cdist(x.float(), codebook).argmin(1)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        got = nearest_code(x, codebook)
    assert torch.equal(got, expected)


def test_kmeans_recovers_well_separated_clusters() -> None:
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    samples = torch.cat([c + 0.1 * torch.randn(50, 2) for c in centres])
    found = kmeans(samples, 3, iters=10)
    matched = torch.cdist(centres, found).min(dim=1).values
    assert torch.all(matched < 0.5)


def test_freshly_initialised_codes_are_spared_for_one_window() -> None:
    """k-means centroids are not judged dead on the few steps between init and the window's end."""
    torch.manual_seed(0)
    cb = Codebook("bill.3", num_codes=8, code_dim=3, segment_sources=[["bill"]],
                  kmeans_init=True, kmeans_buffer_multiple=2, kmeans_iters=3)
    spread = torch.randn(16, 3) * 3
    assert cb.lookup(spread, "bill", train=True) is not None  # the buffer filled: initialised now
    one_point = spread[:1].expand(4, -1).clone()
    cb.lookup(one_point, "bill", train=True)                  # a single code used since init
    assert cb.reset_dead_codes(threshold=1).numel() == 0      # the window init fell in: spared
    cb.lookup(one_point, "bill", train=True)
    assert cb.reset_dead_codes(threshold=1).numel() == 7      # after a full window: judged
    state = cb.training_state()
    assert state["fresh"].numel() == 0


def test_reset_rows_do_not_step_several_times_the_learning_rate() -> None:
    """After a reset at a late step, a replaced row's next Adam step stays within ~lr.

    Zeroing both moments under Adam's per-tensor bias correction (~1 at step t >> 1) would make
    that step (1 - b1) / sqrt(1 - b2) = 3.2 lr for a gradient of the table's usual scale."""
    torch.manual_seed(0)
    lr = 1e-2
    model = MRQVAE(tiny_config(kmeans_init=False))
    cb = model.codebooks["shared_1"]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    data = make_data(128)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(60):
        batch = {s: x[torch.randint(0, 128, (32,), generator=g)] for s, x in data.items()}
        loss = mean_loss(model.forward_batch(batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        cb.usage.zero_()
        cb.usage[8:] = 5                     # codes 0..7 dead, 8..15 alive
    assert model.reset_dead_codes(opt)["shared.1"] == 8
    scale = opt.state[cb.embedding]["exp_avg_sq"][8:].mean(dim=0).sqrt()   # usual gradient size
    opt.zero_grad(set_to_none=True)
    cb.embedding.grad = scale * torch.randn(cb.embedding.shape, generator=g).sign()
    before = cb.embedding.detach().clone()
    opt.step()
    step = (cb.embedding.detach() - before)[:8].abs().max().item()
    assert step <= 1.05 * lr, f"replaced rows moved {step / lr:.2f} x lr"
