"""The `calculate_output` formula of a multi grader, parsed with `ast` and evaluated by a whitelist.

Allowed, as OpenAI's graders guide lists them: numbers, the names of the multi grader's graders,
parentheses, + - * / and ^ (power; `**` also works), unary minus, and the functions
min, max, abs, floor, ceil, exp, sqrt, log. Nothing else parses, so a formula
cannot reach attributes, builtins or imports. Arithmetic is done in floats,
so a huge power overflows (an error) instead of building an enormous integer.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Iterable

FUNCTIONS = {"min": min, "max": max, "abs": abs, "floor": math.floor, "ceil": math.ceil, "exp": math.exp,
             "sqrt": math.sqrt, "log": math.log}
VARIADIC = ("min", "max")


def power(base: float, exponent: float) -> float:
    result = base ** exponent
    if isinstance(result, complex):  # float ** float gives a complex number for a negative base
        raise ValueError(f"{base:g} ^ {exponent:g} is not a real number")
    return result


BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.Pow: power}
UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def parse(formula: str, names: Iterable[str]) -> ast.Expression:
    """The checked syntax tree; ValueError naming the first thing that is not allowed."""
    allowed = set(names)
    if not isinstance(formula, str) or not formula.strip():
        raise ValueError("calculate_output must be a non-empty formula, e.g. '(name + email) / 2'")
    try:
        tree = ast.parse(formula.replace("^", "**").strip(), mode="eval")
    except SyntaxError as err:
        raise ValueError(f"calculate_output {formula!r} is not a formula: {err.msg}") from None
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    for node in ast.walk(tree):
        _check_node(node, allowed, called, formula)
    return tree


def _check_node(node: ast.AST, allowed: set[str], called: set[int], formula: str) -> None:
    if isinstance(node, (ast.Expression, ast.Load, ast.BinOp, ast.UnaryOp)):
        return  # their operators are visited as nodes of their own, below
    if type(node) in BINARY or type(node) in UNARY:
        return
    if isinstance(node, (ast.operator, ast.unaryop)):
        raise ValueError(f"calculate_output {formula!r}: the operator {type(node).__name__} is not allowed "
                         "(use + - * / ^)")
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return
    if isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in FUNCTIONS or node.keywords:
            raise ValueError(f"calculate_output {formula!r}: only {', '.join(FUNCTIONS)} can be called")
        if not node.args or (name not in VARIADIC and len(node.args) != 1):
            raise ValueError(f"calculate_output {formula!r}: {name}() takes "
                             f"{'one or more arguments' if name in VARIADIC else 'one argument'}")
        return
    if isinstance(node, ast.Name):
        if node.id in allowed or (node.id in FUNCTIONS and id(node) in called):
            return
        raise ValueError(f"calculate_output {formula!r}: {node.id!r} is not one of the graders "
                         f"({', '.join(sorted(allowed))})")
    raise ValueError(f"calculate_output {formula!r}: {type(node).__name__} is not allowed (use numbers, grader "
                     "names, + - * / ^, parentheses and min max abs floor ceil exp sqrt log)")


def evaluate(tree: ast.Expression, values: dict[str, float]) -> float:
    """Raises ArithmeticError or ValueError (division by zero, log of 0, overflow) for the caller to report."""
    return float(_eval(tree.body, values))


def _eval(node: ast.AST, values: dict[str, float]) -> float:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return float(values[node.id])
    if isinstance(node, ast.BinOp):
        return float(BINARY[type(node.op)](_eval(node.left, values), _eval(node.right, values)))
    if isinstance(node, ast.UnaryOp):
        return UNARY[type(node.op)](_eval(node.operand, values))
    if isinstance(node, ast.Call):
        return float(FUNCTIONS[node.func.id](*(_eval(a, values) for a in node.args)))
    raise ValueError(f"unexpected {type(node).__name__} in a checked formula")  # parse() lets none through
