"""Drift statistics of code histograms (no Spark): PSI / JS are 0 for the same distribution,
grow with a shift, stay finite with empty bins; top codes cover the asked mass."""
from __future__ import annotations

import math

from u2qt_core.code_stats import js_divergence, perplexity, psi, top_codes


def test_same_distribution_is_zero_and_scale_free():
    train = {0: 50, 1: 30, 2: 20}
    assert psi(train, {0: 5, 1: 3, 2: 2}) < 1e-12
    assert js_divergence(train, {0: 500, 1: 300, 2: 200}) < 1e-12


def test_shift_raises_both_and_empty_bins_stay_finite():
    train = {0: 50, 1: 30, 2: 20}
    mild, strong = {0: 40, 1: 35, 2: 25}, {7: 90, 8: 10}         # codes training never used
    assert 0 < psi(train, mild) < psi(train, strong) and math.isfinite(psi(train, strong))
    assert 0 < js_divergence(train, mild) < js_divergence(train, strong) <= 1
    assert js_divergence(train, strong) > 0.99                   # disjoint supports: ~1 bit
    assert psi(train, strong) > 0.25


def test_perplexity_and_top_codes():
    assert abs(perplexity({0: 10, 1: 10, 2: 10, 3: 10}) - 4) < 1e-9
    assert perplexity({}) == 0.0 and abs(perplexity({5: 3}) - 1.0) < 1e-12
    assert top_codes({0: 50, 1: 30, 2: 15, 3: 5}, 0.8) == [0, 1]
    assert top_codes({0: 50, 1: 30, 2: 15, 3: 5}, 0.81) == [0, 1, 2]
    assert top_codes({0: 1, 1: 1}, 1.0) == [0, 1]


def test_sampling_noise_separates_a_small_quiet_night_from_a_small_moved_one():
    """256 codes, 4,000 training documents, nights of 150: PSI alone says every quiet night has
    drifted (sampling noise ~ (K - 1)(1/n + 1/N)); PSI over its simulated 99th percentile passes
    the default warn / fail thresholds on (almost) no quiet night, and still flags a night whose
    half moved to other codes."""
    import numpy as np

    from u2qt_core.code_stats import sampling_noise

    rng = np.random.default_rng(7)
    p = 1.0 / np.arange(1, 257) ** 0.8
    p /= p.sum()
    train = dict(enumerate(rng.multinomial(4000, p).tolist()))
    noise = sampling_noise(train, 150, allowed=256, quantile=0.99)
    assert noise.psi > 0.25 and 0 < noise.js < 1                  # raw PSI of a quiet night passes fail_psi
    quiet = [dict(enumerate(rng.multinomial(150, p).tolist())) for _ in range(100)]
    assert min(psi(train, q) for q in quiet) > 0.25
    over = [psi(train, q) - noise.psi for q in quiet]
    assert sum(v > 0.1 for v in over) <= 2 and max(over) < 0.25   # warn_psi / fail_psi over the noise: quiet
    moved_p = 0.5 * p + 0.5 * np.roll(p, 128)                     # half of the traffic on other codes
    moved = [dict(enumerate(rng.multinomial(150, moved_p).tolist())) for _ in range(20)]
    assert all(psi(train, m) - noise.psi > 0.25 for m in moved)
    # the noise falls with the night's size: on a large night PSI is judged nearly as it is
    assert sampling_noise(train, 1_000_000, allowed=256).psi < noise.psi / 5
