"""The calculator tool: correct arithmetic, str.count, and refusal of everything else."""


import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_nanogpt.calculator import (
    MAX_EXPR_LEN,
    MAX_INT_BITS,
    CalculatorError,
    calculate,
    format_number,
    use_calculator,
)


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("-7 // 2", -4),
        ("7 % 3", 1),
        ("2 ** 10", 1024),
        ("-3 ** 2", -9),
        ("+4 - -4", 8),
        ("1.5 * 4", 6.0),
        ("1,234 + 1", 1235),
        ("1,234,567 * 2", 2469134),
        ("'strawberry'.count('r')", 3),
        ('"banana".count("an")', 2),
        ("('ab' + 'ab').count('b')", 2),
        ("('ab' * 3).count('a') + 1", 4),
        ("'a,b,c'.count(',')", 2),
        ("  12  ", 12),
        ("12x34", 408),  # as people write it; the arithmetic task's prompts use these forms
        ("12 X 34", 408),
        ("12×34 + 1", 409),
        ("(2)x(3)", 6),
        ("7 ÷ 2", 3.5),
        ("5 − 3", 2),
        ("2·3", 6),
        ("0x10 + 1", 17),  # a hexadecimal literal is not a multiplication
    ],
)
def test_arithmetic_and_count(expr, expected):
    result = calculate(expr)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    "expr, reason",
    [
        ("__import__('os').system('echo hi')", "only call allowed"),
        ("open('/etc/passwd').read()", "only call allowed"),
        ("x + 1", "Name is not allowed"),
        ("(1).__class__", "Attribute is not allowed"),
        ("'abc'.upper()", "only call allowed"),
        ("'abc'.count('a', 1)", "exactly one positional"),
        ("'abc'.count(sub='a')", "exactly one positional"),
        ("(2).count(2)", "on strings"),
        ("[1, 2]", "List is not allowed"),
        ("1, 2", "Tuple is not allowed"),
        ("lambda: 1", "Lambda is not allowed"),
        ("True + 1", "literal True"),
        ("1j * 2", "literal 1j"),
        ("b'x'", "literal b'x'"),
        ("f'{1}'", "JoinedStr"),
        ("1 if 1 else 2", "IfExp"),
        ("1 < 2", "Compare"),
        ("'abc'", "result must be a number"),
        ("'a' + 1", "Add is not defined"),
        ("'a' % 3", "Mod is not defined"),
        ("-'a'", "numbers only"),
        ("1 / 0", "ZeroDivisionError"),
        ("5 % 0", "ZeroDivisionError"),
        ("(-8) ** 0.5", "complex"),
        ("10.0 ** 400", "OverflowError"),
        ("1e308 * 10", "not finite"),
        ("2 ** 100000", "exponent"),
        ("9 ** 9999", "bits"),
        ("(2 ** 4000) * (2 ** 4000)", "product"),
        ("'a' * 100000", "characters exceeds"),
        ("('a' * 9000 + 'b' * 9000).count('a')", "characters exceeds"),
        ("", "empty"),
        ("1 +", "not a valid expression"),
        ("import os", "not a valid expression"),
        ("-" * 120 + "1", "nested"),
        ("(" * 120 + "1" + "+1)" * 120, "nested"),
        ("1" + "+1" * MAX_EXPR_LEN, "exceeds the limit"),
    ],
)
def test_refused(expr, reason):
    with pytest.raises(CalculatorError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        calculate(expr)
    assert use_calculator(expr) is None


def test_time_limit_is_enforced():
    # Each step is size-capped, so a tiny budget is what makes this exceed the deadline.
    expr = "+".join(["(2 ** 4000) % 977"] * 40)
    assert calculate(expr) == sum([pow(2, 4000, 977)] * 40)
    with pytest.raises(CalculatorError, match="time limit"):
        calculate(expr, time_limit=0.0)


def test_worst_case_inputs_end_within_the_calculators_own_limits():
    """Each step is size-capped and the evaluator checks its own deadline, so the worst inputs end with a
    bounded number or a refusal (no wall-clock assertion here: the deadline is the calculator's)."""
    worst = [
        "+".join(["(3 ** 2584) * (3 ** 2584) // 7"] * 30),
        "('ab' * 5000).count('b') * 99",
        "-" * 900 + "1",
    ]
    for expr in worst:
        try:
            result = calculate(expr)
        except CalculatorError as err:
            assert str(err), expr
        else:
            assert isinstance(result, (int, float)) and abs(int(result)).bit_length() <= MAX_INT_BITS, expr


def test_format_number():
    assert format_number(24.0) == "24"
    assert format_number(3.5) == "3.5"
    assert format_number(1 / 3) == "0.333333333333"
    assert format_number(1e20) == "1e+20"
    assert format_number(-7) == "-7"
    assert use_calculator("48 / 2") == "24"
    assert use_calculator("2 ** 64") == "18446744073709551616"


@settings(max_examples=200, deadline=None)
@given(a=st.integers(-10**6, 10**6), b=st.integers(-10**6, 10**6).filter(bool),
       op=st.sampled_from(["+", "-", "*", "//", "%"]))
def test_matches_python_integer_arithmetic(a, b, op):
    expected = {"+": a + b, "-": a - b, "*": a * b, "//": a // b, "%": a % b}[op]
    assert calculate(f"({a}) {op} ({b})") == expected


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300))
def test_arbitrary_text_never_crashes(text):
    # Whatever the model writes, the tool answers a number or refuses with CalculatorError.
    try:
        result = calculate(text)
    except CalculatorError:
        return
    assert isinstance(result, (int, float)) and not isinstance(result, bool)
    assert abs(result).bit_length() <= MAX_INT_BITS if isinstance(result, int) else True
