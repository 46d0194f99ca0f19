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
