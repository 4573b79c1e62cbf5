"""Thompson draws from tabulated Beta quantiles (recipes/thompson.py)."""

import numpy as np
from scipy import stats

from personalize_pipeline.recipes.thompson import BetaQuantiles

# posteriors as exploration builds them: prior 2 pseudo-impressions at the catalogue's mean
# click-through rate plus clicks / ignored impressions
PARAMETERS = [(0.02, 1.98), (0.3077, 1.6923), (1.3077, 8.6923), (65.3, 457.7), (2.0, 300.0), (0.5, 0.5)]


def test_draws_follow_each_items_beta_posterior():
    alpha, beta = (np.array(column) for column in zip(*PARAMETERS, strict=True))
    n = 100_000
    draws = np.exp(BetaQuantiles.of(alpha, beta).log_draws(np.random.default_rng(7), n).astype(np.float64))
    levels = np.array([0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 0.97, 0.99, 0.999])
    for i, (a, b) in enumerate(PARAMETERS):
        posterior = stats.beta(a, b)
        # the posterior's CDF at the draws' quantiles is the level, within sampling error
        at = posterior.cdf(np.quantile(draws[:, i], levels))
        np.testing.assert_array_less(np.abs(at - levels), 4.5 * np.sqrt(levels * (1 - levels) / n), err_msg=f"{a}, {b}")
        assert abs(draws[:, i].mean() - posterior.mean()) < 4 * posterior.std() / np.sqrt(n)


def test_items_with_the_same_posterior_share_a_table_row_and_draw_independently():
    table = BetaQuantiles.of(np.array([1.0, 3.0, 1.0]), np.array([9.0, 2.0, 9.0]))
    np.testing.assert_array_equal(table.log_quantiles[0], table.log_quantiles[2])
    draws = table.log_draws(np.random.default_rng(0), 20_000)
    assert draws.dtype == np.float32 and draws.shape == (20_000, 3)
    assert abs(np.corrcoef(draws[:, 0], draws[:, 2])[0, 1]) < 0.03
    again = table.log_draws(np.random.default_rng(0), 20_000)
    np.testing.assert_array_equal(draws, again)  # seeded: a job's picks are reproducible
