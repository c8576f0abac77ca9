"""The calculator tool: nanochat's `use_calculator`, evaluated so that it cannot hang.

nanochat filters the expression text, then runs `eval` with empty builtins under a 3 s
SIGALRM. SIGALRM only works in the main thread (the server runs the Engine in worker
threads) and cannot interrupt a single long C call anyway, so we bound the work instead:

* Arithmetic (only `0-9 * + - / . ( )` and spaces, no `**`) is inherently polynomial in
  the expression length: without `**` and names, a result has at most as many digits as
  the expression, and Python refuses int literals over 4300 digits. It is parsed, checked
  to contain only arithmetic nodes (so compiling it raises no warnings, whose filters are
  not thread-safe to change), and evaluated by Python itself, exactly as nanochat does.
* String expressions (the `.count(` form) could grow values exponentially in their length
  (`"ab".join("ab".join(...))`), so they are evaluated by a small AST interpreter: each
  operation is still performed by Python, but only allowlisted methods may be called, the
  padding/joining methods are size-checked before they run, and every intermediate value
  is capped. Expressions outside that grammar (names, generator expressions, other
  methods) give None; nanochat fails on nearly all of them too.
"""

import ast
import re
import warnings

# Character filters and blocked substrings, verbatim from nanochat's engine.py.
_ARITHMETIC_CHARS = frozenset("0123456789*+-/.() ")
_STRING_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'\"()._ ")
_BLOCKED_SUBSTRINGS = tuple(
    "__ import exec eval compile open file input raw_input globals locals vars dir".split()
    + "getattr setattr delattr hasattr".split()
)

_ARITHMETIC_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Tuple, ast.Load)
_ARITHMETIC_NODES += (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.UAdd, ast.USub)

# The parser warns about inputs like `1if x else 2`. nanochat silenced SyntaxWarning with
# warnings.catch_warnings, which swaps process-global state and is not thread-safe; one
# permanent filter for our own pseudo-file name affects nothing else.
_FILENAME = "<calculator>"
warnings.filterwarnings("ignore", category=SyntaxWarning, module=re.escape(_FILENAME))

# Largest str/bytes/tuple/list a string expression may produce (counting letters in a
# long text still fits).
MAX_VALUE_LENGTH = 100_000

# Methods whose result is at most a small constant factor larger than their inputs.
_BOUNDED_METHODS = frozenset(
    """
    capitalize casefold count endswith find index isalnum isalpha isascii isdecimal isdigit
    isidentifier islower isnumeric isprintable isspace istitle isupper lower lstrip partition
    removeprefix removesuffix rfind rindex rpartition rsplit rstrip split splitlines startswith
    strip swapcase title upper bit_count bit_length conjugate is_integer as_integer_ratio
    real imag numerator denominator
    """.split()
)
# Methods whose result size is set by their argument: checked before the call.
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})
_ALLOWED_ATTRIBUTES = _BOUNDED_METHODS | _PADDING_METHODS | {"join"}


class _Rejected(Exception):
    """The expression is outside what the calculator evaluates."""


def use_calculator(expr: str) -> object | None:
    """Evaluate a calculator expression like nanochat; None when refused or failing.

    The Engine renders the value with str(); a value whose str() would fail (an int
    beyond Python's 4300-digit conversion limit) is refused here instead.
    """
    expr = expr.replace(",", "")
    try:
        if all(c in _ARITHMETIC_CHARS for c in expr):
            if "**" in expr:
                return None
            value = _eval_arithmetic(_parse(expr))
        elif _string_expression_allowed(expr):
            value = _StringEvaluator().eval(_parse(expr))
        else:
            return None
        str(value)
    except Exception:  # any failure means "no tool output", as in nanochat
        return None
    return value


def _string_expression_allowed(expr: str) -> bool:
    if not all(c in _STRING_CHARS for c in expr):
        return False
    lowered = expr.lower()
    if any(s in lowered for s in _BLOCKED_SUBSTRINGS):
        return False
    return ".count(" in expr


def _parse(expr: str) -> ast.Expression:
    return ast.parse(expr, filename=_FILENAME, mode="eval")


def _eval_arithmetic(tree: ast.Expression) -> object:
    if not all(isinstance(node, _ARITHMETIC_NODES) for node in ast.walk(tree)):
        raise _Rejected("not plain arithmetic")  # e.g. a call like (2)(3)
    return eval(compile(tree, _FILENAME, "eval"), {"__builtins__": {}}, {})


class _StringEvaluator:
    """Evaluates the node types reachable through nanochat's string character set."""

    def eval(self, node: ast.AST) -> object:
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:
            raise _Rejected(f"unsupported syntax: {type(node).__name__}")
        return _checked_size(method(node))

    def _Expression(self, node: ast.Expression) -> object:
        return self.eval(node.body)

    def _Constant(self, node: ast.Constant) -> object:
        return node.value

    def _Tuple(self, node: ast.Tuple) -> object:
        return tuple(self.eval(e) for e in node.elts)

    def _Attribute(self, node: ast.Attribute) -> object:
        if node.attr not in _ALLOWED_ATTRIBUTES:
            raise _Rejected(f"attribute {node.attr!r} is not allowed")
        return getattr(self.eval(node.value), node.attr)

    def _Call(self, node: ast.Call) -> object:
        # Commas are stripped and "=" / "*" are not allowed, so calls have at most one
        # positional argument and never keywords or unpacking.
        func = self.eval(node.func)
        args = [self.eval(a) for a in node.args]
        _check_result_size(func, args)
        return func(*args)

    def _UnaryOp(self, node: ast.UnaryOp) -> object:
        if not isinstance(node.op, ast.Not):
            raise _Rejected("only 'not' is reachable")
        return not self.eval(node.operand)

    def _BoolOp(self, node: ast.BoolOp) -> object:
        value = self.eval(node.values[0])
        for operand in node.values[1:]:
            if isinstance(node.op, ast.And) != bool(value):
                return value  # short-circuit like Python: `and` stops at falsy, `or` at truthy
            value = self.eval(operand)
        return value

    def _Compare(self, node: ast.Compare) -> object:
        left = self.eval(node.left)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = self.eval(comparator)
            if isinstance(op, ast.In):
                ok = left in right
            elif isinstance(op, ast.NotIn):
                ok = left not in right
            elif isinstance(op, ast.Is):
                ok = left is right
            elif isinstance(op, ast.IsNot):
                ok = left is not right
            else:
                raise _Rejected("comparison operators need characters the filter refuses")
            if not ok:
                return False
            left = right
        return True

    def _IfExp(self, node: ast.IfExp) -> object:
        return self.eval(node.body) if self.eval(node.test) else self.eval(node.orelse)


def _check_result_size(func: object, args: list[object]) -> None:
    """Refuse a padding or join call whose result would exceed MAX_VALUE_LENGTH."""
    name = getattr(func, "__name__", None)
    receiver = getattr(func, "__self__", None)
    if name in _PADDING_METHODS and args and isinstance(args[0], int):
        if args[0] > MAX_VALUE_LENGTH:
            raise _Rejected(f"{name}({args[0]}) is too wide")
    elif name == "join" and isinstance(receiver, (str, bytes)) and args:
        items = args[0]
        if isinstance(items, (str, bytes, tuple, list)):
            total = len(receiver) * max(len(items) - 1, 0) + sum(len(i) for i in items if isinstance(i, (str, bytes)))
            if total > MAX_VALUE_LENGTH:
                raise _Rejected("join result is too long")


def _checked_size(value: object) -> object:
    if isinstance(value, (str, bytes, tuple, list)) and len(value) > MAX_VALUE_LENGTH:
        raise _Rejected("value is too long")
    return value
