"""Numbers for people: values to the precision their sd supports, plain notation where it reads."""

import math

import pytest

from mixflow.present.numbers import format_number, format_with_sd


@pytest.mark.parametrize(("value", "sd", "expected"), [
    (21437.2, 251.3, ("21,440", "250")),        # galaxy velocities: not 2.14e+04 (2.5e+02)
    (0.61839, 0.0432, ("0.618", "0.043")),
    (3.669e5, 1.2e4, ("367,000", "12,000")),
    (-2.5, 0.0, ("-2.500", "")),                 # no sd: four significant digits
    (1.0, math.nan, ("1.000", "")),
])
def test_a_value_is_shown_to_the_precision_of_two_digits_of_its_sd(value, sd, expected):
    assert format_with_sd(value, sd) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (366_900.4, "366,900"), (-1130.2641, "-1,130"), (0.5, "0.5000"), (0.000123, "1.230e-04"), (5e7, "5.000e+07"),
    (0.0, "0"), (math.inf, "inf"),
])
def test_without_sd_plain_notation_between_a_thousandth_and_ten_million(value, expected):
    assert format_number(value) == expected


def test_with_an_sd_large_values_stay_in_plain_notation():
    assert format_with_sd(1.154e7, 1.5e6) == ("11,500,000", "1,500,000")


def test_an_sd_below_the_values_float_digits_shows_fifteen_digits_and_the_sd_in_scientific_notation():
    from mixflow.present.numbers import format_with_sd

    assert format_with_sd(21437.2, 251.3) == ("21,440", "250")
    assert format_with_sd(0.355872858656977, 2.9e-102) == ("0.355872858656977", "2.9e-102")
    assert format_with_sd(54.47851641494203, 5.9e-101) == ("54.4785164149420", "5.9e-101")


def test_frequency_weights_near_1e200_fit_and_summarise_without_numpy_warnings_or_200_digit_numbers():
    """Uniform weights scale the likelihood, not the estimate; nothing overflows into a RuntimeWarning, and the
    summary's numbers stay readable (the log-likelihood in scientific notation). As 2.7e202 observations, the
    weighted rows are stopped within 0.1 / sqrt(n) of their limit: at the maximum's fixed point in floating point,
    which the unweighted rows reach at tol=1e-14."""
    import warnings

    import numpy as np

    import mixflow

    faithful = mixflow.load_dataset("faithful")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        plain = mixflow.fit(mixflow.GaussianMixture(2), faithful, random_seed=1, tol=1e-14)
        heavy = mixflow.fit(mixflow.GaussianMixture(2), faithful, random_seed=1, weights=np.full(len(faithful), 1e200))
        text = mixflow.summary(heavy, kind="text")
    np.testing.assert_allclose(heavy["em/estimate"]["mu"].values, plain["em/estimate"]["mu"].values, rtol=1e-12)
    assert heavy["em"].attrs["log_likelihood"] == pytest.approx(1e200 * plain["em"].attrs["log_likelihood"], rel=1e-9)
    assert "log-likelihood -1.13026396018e+203, BIC 2.26052792037e+203" in text
    assert max(len(line) for line in text.splitlines()) < 200
