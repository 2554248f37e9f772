import math

import numpy as np
import pytest

from lorascope.evals.stats import mean_ci, t_cdf, t_quantile


@pytest.mark.parametrize(
    "df, expected",
    [(1, 12.7062), (2, 4.3027), (5, 2.5706), (10, 2.2281), (30, 2.0423), (1000, 1.9623)],
)
def test_t_quantile_matches_published_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)


def test_t_cdf_is_symmetric_and_inverse_of_quantile():
    for df in (1, 3, 7, 50):
        assert t_cdf(0.0, df) == pytest.approx(0.5)
        assert t_cdf(-1.3, df) == pytest.approx(1 - t_cdf(1.3, df))
        assert t_cdf(t_quantile(0.9, df), df) == pytest.approx(0.9, abs=1e-9)


def test_mean_ci_is_the_t_interval():
    values = [0.1, 0.3, 0.2, 0.4]
    ci = mean_ci(values)
    sd = np.std(values, ddof=1)
    half = 3.1824 * sd / 2  # t(0.975, 3) * s / sqrt(4)
    assert ci.mean == pytest.approx(0.25)
    assert ci.low == pytest.approx(0.25 - half, abs=1e-4)
    assert ci.high == pytest.approx(0.25 + half, abs=1e-4)
    assert ci.n == 4


def test_mean_ci_ignores_nan_and_is_undefined_for_one_value():
    ci = mean_ci([0.5, float("nan")])
    assert ci.n == 1 and ci.mean == 0.5 and math.isnan(ci.low) and math.isnan(ci.high)
    empty = mean_ci([])
    assert empty.n == 0 and math.isnan(empty.mean)
