"""stabdiag.textfmt: the one step-range formatter, number formatter and fail-on parser."""

from __future__ import annotations

import math

import pytest

from stabdiag.errors import ConfigError
from stabdiag.findings import Severity
from stabdiag.textfmt import EN_DASH, FAIL_ON, at_steps, num, parse_fail_on, step_span


def test_step_span_one_step_a_range_and_none() -> None:
    assert (
        step_span(120) == "120" and step_span(120, 120) == "120" and step_span(120, None) == "120"
    )
    assert step_span(120, 180) == "120-180"
    assert step_span(120, 180, dash=EN_DASH) == "120\u2013180"
    assert step_span(None) == "-" and step_span(None, 5, none=EN_DASH) == EN_DASH
    assert step_span(0, 0) == "0"  # step 0 is a step, not a missing one


def test_at_steps_says_step_or_steps() -> None:
    assert at_steps(150) == "step 150" and at_steps(150, 150) == "step 150"
    assert at_steps(500, 503) == "steps 500-503"
    assert at_steps(500, 503, dash=EN_DASH) == "steps 500\u2013503"
    assert at_steps(None, None) == ""  # a whole-run finding has no place on the step axis


def test_num_formats_missing_and_non_finite_values() -> None:
    assert (
        num(0.0012345) == "0.00123" and num(2.5, ".3f") == "2.500" and num(-0.1, "+.2f") == "-0.10"
    )
    assert num(None) == "-" and num(None, missing=EN_DASH) == EN_DASH
    # NaN is evidence where a loss diverged (printed), and "no value" where a cell failed.
    assert num(math.nan, ".4g") == "nan" and num(math.inf) == "inf"
    assert num(math.nan, ".3f", nonfinite=EN_DASH) == EN_DASH
    assert num(1.5, ".3f", nonfinite=EN_DASH) == "1.500"


def test_parse_fail_on_levels_and_the_error_line() -> None:
    assert [parse_fail_on(v) for v in FAIL_ON] == [
        Severity.INFO,
        Severity.WARNING,
        Severity.ERROR,
        None,
    ]
    with pytest.raises(
        ConfigError, match=r"^--fail-on 'loud': expected one of info, warning, error, never$"
    ):
        parse_fail_on("loud")
    with pytest.raises(ConfigError, match=r"^stabdiag.toml: fail-on 3: expected one of"):
        parse_fail_on(3, "stabdiag.toml: fail-on")
    with pytest.raises(ConfigError):
        parse_fail_on("ERROR")  # levels are written in lower case everywhere, as documented
