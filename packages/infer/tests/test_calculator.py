"""use_calculator: nanochat's filters and results, bounded evaluation, thread safety."""

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from flaxchat.infer.tools import use_calculator
from flaxchat.infer.tools.calculator import MAX_VALUE_LENGTH


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("1+2", 3),
        ("12 * (3 - 1)", 24),
        ("7/2", 3.5),
        ("7//2", 3),
        ("-3 + +4", 1),
        ("1,234 + 1", 1235),  # commas are removed first
        ("1,000,000*3", 3000000),
        ("(1)", 1),
        ("0.1+0.2", 0.30000000000000004),
        ("123456789*987654321", 121932631112635269),
    ],
)
def test_arithmetic(expr, expected):
    result = use_calculator(expr)
    assert result == expected and type(result) is type(expected)


def test_float_results_render_like_nanochat():
    # The Engine renders results with str(): a float stays a float.
    assert str(use_calculator("0.2*50")) == "10.0"
    assert str(use_calculator("48/2")) == "24.0"
    assert str(use_calculator("48//2")) == "24"


@pytest.mark.parametrize(
    "expr, expected",
    [
        ('"strawberry".count("r")', 3),
        ("'strawberry'.count('r')", 3),
        ('"banana".count("an")', 2),
        ('"Mississippi".lower().count("s")', 4),
        ('"hello".upper().count("L")', 2),
        ('"a b a".split().count("a")', 2),
        ('"abc" "abc".count("c")', 2),  # implicit concatenation
        ('"ab".center(6).count(" ")', 4),
        ('"x".join("abc").count("x")', 2),
        ('"a".count("a") if "a" in "cat" else 0', 1),
        ('not "abc".count("z")', True),
        ('"abc".count("z") or "abc".count("c")', 1),
        ('"a,b,c".count(",")', 4),  # commas removed first: "abc".count("") == 4
    ],
)
def test_string_counting(expr, expected):
    result = use_calculator(expr)
    assert result == expected
    # nanochat's evaluation, for comparison
    assert result == eval(expr.replace(",", ""), {"__builtins__": {}}, {})


@pytest.mark.parametrize(
    "expr",
    [
        "2**10",  # power is refused outright
        "9**9**9",
        "__import__('os').system('echo hi')",
        "open('x').count('a')",
        "'abc'.__class__.count('a')",
        "''.__class__.__mro__",
        "exec('1').count('a')",
        "eval('1+1').count('a')",
        "compile('1','a','eval')",
        "getattr('a', 'count')('a')",
        "globals().count('a')",
        "dir().count('a')",
        "input().count('a')",
        "lambda: 1",  # ':' is not allowed
        "[x for x in 'abc'].count('a')",  # '[' is not allowed
        "{'a': 1}",
        "'a' + 'b'",  # '+' with letters is neither arithmetic nor allowed
        "'abc'.upper()",  # no .count(: refused
        "'abc'.count(x for x in 'a')",  # a generator expression
        "os.count('a')",  # names resolve to nothing
        "'{}'.format('a').count('a')",  # braces are not allowed
        "'x'.format.count('a')",  # methods outside the allowlist
        "'abc'.encode('rot13').count('a')",
        "'abc'.count('a'); import os",
        "1/0",
        "(2)(3)",  # a call on a number
        "",
        "  ",
        "1 +",
    ],
)
def test_refusals_and_failures_give_none(expr):
    assert use_calculator(expr) is None


def test_string_growth_is_bounded():
    # Each nested join multiplies the length; nanochat's eval would keep allocating.
    nested = '"aa".join(' * 30 + '"abcdefgh"' + ")" * 30
    start = time.perf_counter()
    assert use_calculator(nested + '.count("a")') is None
    assert use_calculator(f'"a".ljust({MAX_VALUE_LENGTH + 1}).count("a")') is None
    assert use_calculator(f'"a".zfill({10**12}).count("0")') is None
    assert use_calculator(f'"a".ljust({MAX_VALUE_LENGTH}).count(" ")') == MAX_VALUE_LENGTH - 1
    assert time.perf_counter() - start < 1.0


def test_pathological_arithmetic_is_fast_and_safe():
    start = time.perf_counter()
    # A product with ~33,000 digits: fine to compute, too long to render (Python's
    # 4300-digit str limit), so refused instead of crashing the Engine's str().
    assert use_calculator("*".join(["99999999999"] * 3000)) is None
    assert use_calculator("-" * 100_000 + "1") is None  # parser limits, not a crash
    assert use_calculator("(" * 1000 + "1" + ")" * 1000) is None
    assert use_calculator("+".join(["1"] * 500)) == 500
    assert time.perf_counter() - start < 2.0


def test_parser_warnings_are_silenced_without_global_state():
    # `1else` makes the parser warn; run where warnings are errors to prove it is filtered.
    script = 'from flaxchat.infer.tools import use_calculator\nprint(use_calculator(\'"ab".count("a")if 1else 0\'))\n'
    out = subprocess.run([sys.executable, "-W", "error", "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout == "1\n" and out.stderr == ""


def test_works_from_worker_threads():
    exprs = [f"{i}*{i}+1" for i in range(200)] + [f'"{"r" * i}".count("r")' for i in range(200)]
    expected = [i * i + 1 for i in range(200)] + list(range(200))
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(use_calculator, exprs)) == expected
