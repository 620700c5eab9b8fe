"""The calculator tool: evaluates the expression a chat model writes between `<|python_start|>` and
`<|python_end|>`, safely.

The model's text is untrusted, so nothing here calls `eval`/`exec`. The expression is parsed with
`ast.parse(mode="eval")` and walked by a small interpreter that accepts only:

- number literals (int, float; not bool, not complex) and string literals;
- `+ - * / // % **` between numbers, unary `+`/`-`, parentheses (they are just nesting in the AST);
  `x`/`×`/`·` between numbers mean `*`, `÷` means `/`, `−` means `-` (written as people write them);
- `+` between strings, `*` between a string and an int (both size-checked);
- `"...".count("...")`: the one method call, on a string, with one string argument.

Every intermediate value is size-checked *before* it is computed (integers up to `MAX_INT_BITS`,
exponents up to `MAX_EXPONENT`, strings up to `MAX_STR_LEN` characters), so each step is cheap; a
wall-clock deadline is checked at every node on top of that. The final answer must be a number,
which keeps tool output to digits (a string answer could smuggle special-token text back into the
token stream).

    >>> use_calculator("1,234 * 2")
    '2468'
    >>> use_calculator("12x34")
    '408'
    >>> use_calculator('"strawberry".count("r")')
    '3'
    >>> use_calculator("__import__('os')") is None
    True
"""

import ast
import math
import operator
import re
import time

MAX_EXPR_LEN = 1000  # characters of source accepted at all
MAX_DEPTH = 100  # AST nesting; deeper input is refused before Python's own recursion limit matters
MAX_INT_BITS = 4096  # ~1233 decimal digits: far beyond arithmetic a chat model needs
MAX_EXPONENT = 10_000
MAX_STR_LEN = 10_000
DEFAULT_TIME_LIMIT = 1.0  # seconds

# Digit-group separators ("1,234,567") that models copy from text; stripped only outside strings.
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# Multiplication and division as people write them ("12 x 34", "12×34", "7 ÷ 2", "5 − 3"), so a model can
# copy the user's expression into the call as written; rewritten only outside strings.
_TIMES_LETTER = re.compile(r"(?<=[\d)])\s*[xX]\s*(?=[\d(])")
_HEX = re.compile(r"(?<![\w.])0[xX][0-9a-fA-F]")
_SYMBOLS = str.maketrans({"×": "*", "·": "*", "÷": "/", "−": "-"})

_BINARY_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY_OPS = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class CalculatorError(ValueError):
    """The expression is not allowed, too large, too slow, or fails to evaluate (e.g. 1/0)."""


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _int_bits(x) -> int:
    return x.bit_length() if isinstance(x, int) else 0


class _Evaluator:
    """Walks a parsed expression; one instance per evaluation (it carries the deadline)."""

    def __init__(self, deadline: float):
        self.deadline = deadline

    def eval(self, node: ast.AST, depth: int = 0):
        if time.monotonic() > self.deadline:
            raise CalculatorError("time limit exceeded")
        if depth > MAX_DEPTH:
            raise CalculatorError(f"expression nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, ast.Expression):
            return self.eval(node.body, depth + 1)
        if isinstance(node, ast.Constant):
            value = node.value
            if _is_number(value):
                self._check_int(value)
                return value
            if isinstance(value, str):
                self._check_str(value)
                return value
            raise CalculatorError(f"literal {value!r} of type {type(value).__name__} is not allowed")
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY_OPS:
            operand = self.eval(node.operand, depth + 1)
            if not _is_number(operand):
                raise CalculatorError("unary +/- applies to numbers only")
            return _UNARY_OPS[type(node.op)](operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPS:
            left = self.eval(node.left, depth + 1)
            right = self.eval(node.right, depth + 1)
            return self._binary(type(node.op), left, right)
        if isinstance(node, ast.Call):
            return self._count(node, depth)
        raise CalculatorError(f"{type(node).__name__} is not allowed (only arithmetic and str.count)")

    def _binary(self, op: type, left, right):
        if isinstance(left, str) or isinstance(right, str):
            return self._string_binary(op, left, right)
        if op is ast.Pow:
            self._check_power(left, right)
        elif op is ast.Mult and _int_bits(left) + _int_bits(right) > MAX_INT_BITS:
            raise CalculatorError(f"product would exceed {MAX_INT_BITS} bits")
        try:
            result = _BINARY_OPS[op](left, right)
        except (ZeroDivisionError, OverflowError, ValueError) as err:
            raise CalculatorError(f"{type(err).__name__}: {err}") from None
        if isinstance(result, complex):  # e.g. (-8) ** 0.5
            raise CalculatorError("result is a complex number")
        self._check_int(result)
        return result

    def _string_binary(self, op: type, left, right) -> str:
        if op is ast.Add and isinstance(left, str) and isinstance(right, str):
            self._check_str_len(len(left) + len(right))
            return left + right
        if op is ast.Mult:
            text, times = (left, right) if isinstance(left, str) else (right, left)
            if isinstance(text, str) and isinstance(times, int) and not isinstance(times, bool):
                self._check_str_len(len(text) * max(times, 0))
                return text * times
        raise CalculatorError(f"{op.__name__} is not defined for {type(left).__name__} and {type(right).__name__}")

    def _count(self, node: ast.Call, depth: int) -> int:
        func = node.func
        if not (isinstance(func, ast.Attribute) and func.attr == "count"):
            raise CalculatorError("the only call allowed is <string>.count(<string>)")
        if len(node.args) != 1 or node.keywords:
            raise CalculatorError(".count() takes exactly one positional argument here")
        haystack = self.eval(func.value, depth + 1)
        needle = self.eval(node.args[0], depth + 1)
        if not (isinstance(haystack, str) and isinstance(needle, str)):
            raise CalculatorError(".count() is allowed on strings with a string argument only")
        return haystack.count(needle)

    @staticmethod
    def _check_power(base, exponent) -> None:
        if not (_is_number(base) and _is_number(exponent)):
            raise CalculatorError("** applies to numbers only")
        if abs(exponent) > MAX_EXPONENT:
            raise CalculatorError(f"exponent {exponent} exceeds the limit of {MAX_EXPONENT}")
        if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
            # |base| ** e has about e * log2|base| bits; refuse before computing it.
            if abs(base) > 1 and exponent * math.log2(abs(base)) > MAX_INT_BITS:
                raise CalculatorError(f"power would exceed {MAX_INT_BITS} bits")

    @staticmethod
    def _check_int(value) -> None:
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise CalculatorError(f"integer exceeds {MAX_INT_BITS} bits")

    @classmethod
    def _check_str(cls, value: str) -> None:
        cls._check_str_len(len(value))

    @staticmethod
    def _check_str_len(n: int) -> None:
        if n > MAX_STR_LEN:
            raise CalculatorError(f"string of {n} characters exceeds the limit of {MAX_STR_LEN}")


def _normalise(expr: str) -> str:
    """Strip surrounding whitespace; when the expression has no strings, drop digit-group commas and
    read `x`, `×`, `·` as `*`, `÷` as `/` and `−` as `-`."""
    expr = expr.strip()
    if "'" not in expr and '"' not in expr:
        expr = _THOUSANDS.sub("", expr).translate(_SYMBOLS)
        if not _HEX.search(expr):  # 0x10 stays a hexadecimal literal
            expr = _TIMES_LETTER.sub(" * ", expr)
    return expr


def calculate(expr: str, time_limit: float = DEFAULT_TIME_LIMIT) -> int | float:
    """Evaluate a calculator expression and return its numeric value.

    Raises `CalculatorError` naming the reason when the expression is not allowed, too large, does
    not finish within `time_limit` seconds, fails (division by zero) or has a non-numeric result.
    """
    if not isinstance(expr, str):
        raise CalculatorError(f"expression must be a str, got {type(expr).__name__}")
    if len(expr) > MAX_EXPR_LEN:
        raise CalculatorError(f"expression of {len(expr)} characters exceeds the limit of {MAX_EXPR_LEN}")
    source = _normalise(expr)
    if not source:
        raise CalculatorError("empty expression")
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise CalculatorError(f"not a valid expression: {type(err).__name__}") from None
    try:
        result = _Evaluator(time.monotonic() + time_limit).eval(tree)
    except RecursionError:
        raise CalculatorError("expression nested too deeply") from None
    if not _is_number(result):
        raise CalculatorError(f"result must be a number, got {type(result).__name__}")
    if isinstance(result, float) and not math.isfinite(result):
        raise CalculatorError(f"result is not finite: {result}")
    return result


def format_number(value: int | float) -> str:
    """Render a result the way it appears in training data: `24` not `24.0`, 12 significant digits."""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.12g}"
    return str(value)


def use_calculator(expr: str, time_limit: float = DEFAULT_TIME_LIMIT) -> str | None:
    """The engine's tool hook: the formatted result, or `None` when the expression is refused or
    fails (the engine then forces no output, as nanochat does)."""
    try:
        return format_number(calculate(expr, time_limit=time_limit))
    except CalculatorError:
        return None


__all__ = ["CalculatorError", "calculate", "format_number", "use_calculator"]
