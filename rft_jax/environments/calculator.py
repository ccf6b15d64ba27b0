"""`calculator`: a safe arithmetic evaluator over Python's `ast`, never `eval`.

The expression is parsed, then the whole tree is checked against a small grammar
(numbers, + - * / // % **, unary + and -, parentheses, and the functions in
FUNCTIONS) before anything is computed, so names, attributes, subscripts and other
calls are refused unevaluated. Resource limits: the expression's length, and the size
of every integer (MAX_BITS), checked before a power or product is computed, so
9**9**9 is refused instead of computed.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

from rft_jax.environments.base import ToolEnvironment, ToolError, function_schema

MAX_LENGTH = 300  # characters of expression
MAX_BITS = 4096  # largest integer operand or result (about 1,233 decimal digits)

BINARY: dict[type, Callable[[object, object], object]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
UNARY: dict[type, Callable[[object], object]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _round(x: int | float, ndigits: int | None = None) -> int | float:
    if ndigits is not None and (not isinstance(ndigits, int) or abs(ndigits) > 100):
        raise ToolError("round's digits must be an integer between -100 and 100")
    return round(x, ndigits)


FUNCTIONS: dict[str, Callable[..., object]] = {"sqrt": math.sqrt, "abs": abs, "round": _round}

SCHEMA = function_schema(
    "calculator", "Evaluate an arithmetic expression: numbers, + - * / // % ** and parentheses, "
    "and the functions sqrt, abs and round. Example: (123 * 45) + 6",
    {"expression": ("string", "the expression to evaluate")})


def check(node: ast.AST) -> None:
    """Raise ToolError unless every node of the tree is in the grammar (nothing is computed here)."""
    if isinstance(node, ast.Expression):
        check(node.body)
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ToolError(f"only numbers are allowed, not {node.value!r}")
    elif isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        check(node.left)
        check(node.right)
    elif isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        check(node.operand)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
            raise ToolError(f"only the functions {', '.join(FUNCTIONS)} may be called, with positional arguments")
        for arg in node.args:
            check(arg)
    elif isinstance(node, ast.Name):
        raise ToolError(f"names are not allowed: {node.id!r} (use numbers and operators)")
    else:
        raise ToolError(f"not allowed in an arithmetic expression: {type(node).__name__}")


def _bits(x: object) -> float:
    """log2 of |x| (at least 0), for size checks before computing."""
    x = abs(x)  # type: ignore[arg-type]
    if isinstance(x, int):
        return float(x.bit_length())
    return math.log2(x) if x > 1 else 0.0


def guard(op: type, left: object, right: object) -> None:
    """Refuse an operation whose integer result would exceed MAX_BITS, before computing it."""
    if op is ast.Pow and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
        if right > 0 and right * math.log2(abs(left)) > MAX_BITS:
            raise ToolError(f"the power {left}**{right} is too large to compute")
    if op is ast.Mult and isinstance(left, int) and isinstance(right, int) and _bits(left) + _bits(right) > MAX_BITS:
        raise ToolError("the product is too large to compute")


def evaluate(node: ast.AST) -> int | float:
    if isinstance(node, ast.Expression):
        return evaluate(node.body)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp):
        return UNARY[type(node.op)](evaluate(node.operand))
    if isinstance(node, ast.Call):
        return FUNCTIONS[node.func.id](*(evaluate(arg) for arg in node.args))
    left, right = evaluate(node.left), evaluate(node.right)
    guard(type(node.op), left, right)
    value = BINARY[type(node.op)](left, right)
    if isinstance(value, complex):
        raise ToolError("the result is a complex number")
    if isinstance(value, int) and value.bit_length() > MAX_BITS:
        raise ToolError("the result is too large")
    return value


def format_number(value: int | float) -> str:
    """Integers exactly (123*45 -> 5535); floats to 12 significant digits, whole ones without ".0"."""
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        raise ToolError("the result is not a finite number")
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.12g}"


# The signs people (and models) write for * / and -, read as Python's operators: "263 × 82" is a product, not
# an error. Only these single characters are mapped; the expression is still parsed and checked as before.
MATH_SIGNS = str.maketrans({"×": "*", "·": "*", "÷": "/", "−": "-"})


def calculate(expression: str) -> str:
    """The value of an arithmetic expression as text; ToolError says why one is refused."""
    if not isinstance(expression, str):
        raise ToolError("`expression` must be a string, e.g. \"123 * 45\"")
    if len(expression) > MAX_LENGTH:
        raise ToolError(f"the expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(expression.strip().translate(MATH_SIGNS), mode="eval")
    except SyntaxError as err:
        raise ToolError(f"not a valid expression: {err.msg}") from None
    check(tree)
    try:
        return format_number(evaluate(tree))
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except (OverflowError, RecursionError, MemoryError):
        raise ToolError("the result is too large") from None
    except (ValueError, TypeError) as err:  # sqrt(-1), round(1, 2, 3)
        raise ToolError(str(err)) from None


class CalculatorEnvironment(ToolEnvironment):
    """One tool, `calculator(expression)`."""

    def __init__(self, *, timeout_s: float = 5.0):
        super().__init__({"calculator": calculate}, [SCHEMA], timeout_s=timeout_s)
