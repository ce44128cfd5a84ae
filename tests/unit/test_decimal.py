"""Exact fixed-point numbers: Binance decimal strings <-> integer 1e-8 units."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spikewatch.core.decimal import (
    MAX_UNITS,
    BadNumber,
    float_to_units,
    parse_units,
    units_to_decimal,
    units_to_str,
)

#: Every positive decimal with at most 8 decimals below 9e10 (BTC prices, quantities).
eight_decimals = st.decimals(
    min_value=Decimal("0.00000001"),
    max_value=Decimal("89999999999.99999999"),
    places=8,
    allow_nan=False,
    allow_infinity=False,
)


@pytest.mark.parametrize(
    ("text", "units"),
    [
        ("0.00123000", 123_000),
        ("61837.63000000", 6_183_763_000_000),
        ("24670.90", 2_467_090_000_000),
        ("0.070", 7_000_000),
        ("1", 100_000_000),
        ("0.00000001", 1),
        (".5", 50_000_000),
        ("92233720368.54775807", MAX_UNITS),
    ],
)
def test_binance_decimal_strings_parse_to_exact_units(text: str, units: int) -> None:
    assert parse_units(text) == units


@pytest.mark.parametrize(
    "text",
    [
        "0",
        "0.00000000",
        "-1",
        "+1",
        "NaN",
        "nan",
        "inf",
        "Infinity",
        "1e5",
        "1E-8",
        "",
        ".",
        " 1",
        "1 ",
        "1_000",
        "1,5",
        "0x10",
        "\u0663",  # ARABIC-INDIC DIGIT THREE: a digit to str.isdigit, not to Binance
        "1.000000001",  # a non-zero 9th decimal cannot be held exactly
        "0.000000001",
        "92233720368.54775808",  # one unit above int64
        "100000000000",
    ],
)
def test_anything_but_a_positive_plain_decimal_is_rejected(text: str) -> None:
    with pytest.raises(BadNumber):
        parse_units(text)


def test_bad_number_is_a_value_error_for_callers_that_catch_those() -> None:
    with pytest.raises(ValueError, match="decimals"):
        parse_units("1.000000001")


@pytest.mark.parametrize("text", ["1.0000000000", "0.123456780000", "61837.630000000000000"])
def test_zeros_past_the_eighth_decimal_are_accepted(text: str) -> None:
    assert parse_units(text) == int(Decimal(text) * 10**8)


@pytest.mark.parametrize(
    ("units", "text"),
    [
        (1, "0.00000001"),
        (123_000, "0.00123"),
        (150_000_000, "1.5"),
        (100_000_000, "1"),
        (6_183_763_000_000, "61837.63"),
        (MAX_UNITS, "92233720368.54775807"),
    ],
)
def test_units_format_as_plain_decimals_without_trailing_zeros(units: int, text: str) -> None:
    assert units_to_str(units) == text


def test_units_to_decimal_is_the_exact_value() -> None:
    assert units_to_decimal(6_183_763_000_000) == Decimal("61837.63")
    assert units_to_decimal(1) == Decimal("0.00000001")


@pytest.mark.parametrize(
    ("value", "units"),
    [
        (0.1 + 0.2, 30_000_000),  # 0.30000000000000004
        (0.7 * 3, 210_000_000),  # 2.0999999999999996
        (61837.63, 6_183_763_000_000),
        (0.00000001, 1),
        (1.15, 115_000_000),
    ],
)
def test_lossy_floats_round_to_the_eight_decimal_value(value: float, units: int) -> None:
    assert float_to_units(value) == units


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), float("-inf"), -1.0, -0.00000001, 0.0, -0.0, 1e-9, 1e11],
)
def test_floats_that_are_not_a_positive_in_range_quantity_are_rejected(value: float) -> None:
    with pytest.raises(BadNumber):
        float_to_units(value)


@given(eight_decimals)
def test_any_eight_decimal_value_parses_exactly_and_formats_back(d: Decimal) -> None:
    text = format(d, "f")  # the plain form Binance sends, never "1E-8"
    units = parse_units(text)
    assert units == int(d * 10**8)
    assert Decimal(units_to_str(units)) == d
    assert parse_units(units_to_str(units)) == units
    assert parse_units(text + "0000") == units


@given(st.integers(min_value=1, max_value=10**15 - 1))
def test_any_float_written_from_an_eight_decimal_value_recovers_it(units: int) -> None:
    # up to 15 significant digits survive a trip through a binary float
    assert float_to_units(units / 10**8) == units
