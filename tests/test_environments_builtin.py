"""The built-in tool environments: calculator (safe arithmetic, never eval), sqlite (read-only), python
(the code sandbox). Each refusal is an error message the model reads, never an exception."""

import sqlite3
import time

import pytest

from rft_jax.data.example import Example
from rft_jax.data.tool_calls import ParsedTurn, ToolCall
from rft_jax.environments import EnvironmentConfig, ToolError, make_environment
from rft_jax.environments import calculator as calc
from rft_jax.environments.calculator import calculate

MESSAGES = [{"role": "user", "content": "hi"}]


def ask(env, name, **arguments):
    """The reply to one call and whether it counted as an error."""
    result = env.step(ParsedTurn("", (ToolCall(name, arguments, "call_0"),)))
    assert len(result.messages) == 1 and result.messages[0]["tool_call_id"] == "call_0"
    return result.messages[0]["content"], result.errors


@pytest.mark.parametrize("expression, value", [
    ("123*45", "5535"), ("123 * 45 + 6", "5541"), ("(2 + 3) * -4", "-20"), ("7 / 2", "3.5"), ("10 / 2", "5"),
    ("7 // 2", "3"), ("-7 % 3", "2"), ("2 ** 10", "1024"), ("0.1 + 0.2", "0.3"), ("sqrt(2)", "1.41421356237"),
    ("abs(-3) + round(2.567, 2)", "5.57"), ("+1_000 * 2", "2000"), ("2 ** 0.5 * 2 ** 0.5", "2"),
    ("987654321 * 123456789", "121932631112635269"), ("263 × 82", "21566"), ("84 ÷ 4 − 1", "20"),
])
def test_calculator_evaluates_arithmetic(expression, value):
    assert calculate(expression) == value


@pytest.mark.parametrize("expression, reason", [
    ("x + 1", "names are not allowed: 'x'"),
    ("__import__('os').system('true')", "only the functions"),
    ("(1).real", "Attribute"),
    ("[1, 2][0]", "Subscript"),
    ("print(1)", "only the functions"),
    ("sqrt(x=4)", "positional arguments"),
    ("lambda: 1", "Lambda"),
    ("'a' * 3", "only numbers"),
    ("True + 1", "only numbers"),
    ("1j * 1j", "only numbers"),
    ("1 if 1 else 0", "IfExp"),
    ("1 +", "not a valid expression"),
    ("1 / 0", "division by zero"),
    ("9 ** 9 ** 9", "too large to compute"),
    ("(10 ** 1000) * (10 ** 1000)", "too large"),
    ("2.5 ** 1e6", "too large"),
    ("1e308 * 10", "not a finite number"),
    ("(-8) ** (1 / 3)", "complex"),
    ("round(5, -10 ** 9)", "between -100 and 100"),
    ("1 + " * 100 + "1", "longer than"),
])
def test_calculator_refuses_without_evaluating(expression, reason):
    start = time.monotonic()
    with pytest.raises(ToolError, match=reason):
        calculate(expression)
    assert time.monotonic() - start < 0.5


def test_calculator_checks_the_whole_tree_before_computing_anything(monkeypatch):
    computed = []
    monkeypatch.setitem(calc.FUNCTIONS, "abs", lambda x: computed.append(x) or abs(x))
    with pytest.raises(ToolError, match="names are not allowed"):
        calculate("abs(-1) + os")
    assert computed == []


def test_calculator_environment_answers_and_contains_errors():
    env = make_environment(EnvironmentConfig(name="calculator"), Example("c", MESSAGES))
    assert ask(env, "calculator", expression="123*45") == ("5535", 0)
    content, errors = ask(env, "calculator", expression="open('/etc/passwd')")
    assert errors == 1 and content.startswith("Error: only the functions")
    assert ask(env, "calculator", expression=5)[0].startswith("Error: `expression` must be a string")
    assert ask(env, "calculator", expr="1")[0].startswith("Error: bad arguments for 'calculator'")


DB_SQL = """
CREATE TABLE cities (name TEXT, country TEXT, population INTEGER);
INSERT INTO cities VALUES ('Paris', 'FR', 2100000), ('Lyon', 'FR', 520000), ('Oslo', 'NO', 700000);
"""


def sqlite_env(example):
    env = make_environment(EnvironmentConfig(name="sqlite"), example)
    assert env.reset(example) == []
    return env


@pytest.fixture
def db_file(tmp_path):
    path = tmp_path / "cities.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(DB_SQL)
    conn.close()
    return path


def test_sqlite_queries_a_database_built_from_sql_text():
    env = sqlite_env(Example("s", MESSAGES, metadata={"database": DB_SQL}))
    content, errors = ask(env, "sql", query="SELECT name, population FROM cities WHERE country = 'FR' ORDER BY name")
    assert errors == 0 and content == "name | population\nLyon | 520000\nParis | 2100000"
    assert ask(env, "sql", query="SELECT name FROM cities WHERE 0")[0] == "name\n(no rows)"
    assert "1 | country | TEXT" in ask(env, "sql", query="PRAGMA table_info(cities)")[0]  # schema reads are allowed
    assert ask(env, "sql", query="SELECT sql FROM sqlite_master")[0].startswith("sql\nCREATE TABLE cities")
    env.close()


def test_sqlite_opens_a_file_read_only_and_caps_rows(db_file):
    env = make_environment(EnvironmentConfig(name="sqlite", database_field="db"),
                           Example("s", MESSAGES, metadata={"db": str(db_file)}))
    env.reset(Example("s", MESSAGES, metadata={"db": str(db_file)}))
    env.max_rows = 2
    content, errors = ask(env, "sql", query="SELECT name FROM cities ORDER BY name")
    assert errors == 0 and content == "name\nLyon\nOslo\n... (only the first 2 rows are shown)"
    env.close()


@pytest.mark.parametrize("query", [
    "DELETE FROM cities", "INSERT INTO cities VALUES ('Rome', 'IT', 1)", "DROP TABLE cities",
    "UPDATE cities SET population = 0", "CREATE TABLE t (x)", "PRAGMA query_only = OFF",
    "ATTACH DATABASE '/tmp/rft-env-attach.sqlite' AS other",
])
@pytest.mark.parametrize("source", ["sql", "file"])
def test_sqlite_refuses_writes(query, source, db_file):
    database = DB_SQL if source == "sql" else str(db_file)
    env = sqlite_env(Example("s", MESSAGES, metadata={"database": database}))
    content, errors = ask(env, "sql", query=query)
    assert errors == 1 and content.startswith("Error: the database is read-only"), content
    assert ask(env, "sql", query="SELECT count(*) AS n FROM cities") == ("n\n3", 0)
    env.close()
    reopened = sqlite3.connect(db_file)
    assert reopened.execute("SELECT count(*), sum(population) FROM cities").fetchone() == (3, 3320000)
    reopened.close()


def test_sqlite_errors_and_timeouts_are_tool_errors():
    env = make_environment(EnvironmentConfig(name="sqlite", timeout_s=0.3),
                           Example("s", MESSAGES, metadata={"database": DB_SQL}))
    env.reset(Example("s", MESSAGES, metadata={"database": DB_SQL}))
    assert ask(env, "sql", query="SELECT nope FROM cities")[0].startswith("Error: OperationalError: no such column")
    assert ask(env, "sql", query="SELECT 1; SELECT 2")[1] == 1
    start = time.monotonic()
    endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
    content, errors = ask(env, "sql", query=endless)
    assert errors == 1 and ("took longer than 0.3 s" in content or "timed out" in content)
    assert time.monotonic() - start < 2
    assert ask(env, "sql", query="SELECT count(*) AS n FROM cities") == ("n\n3", 0)


def test_sqlite_without_a_database_is_a_data_error(tmp_path):
    env = make_environment(EnvironmentConfig(name="sqlite"), Example("s", MESSAGES))
    with pytest.raises(ValueError, match="metadata field 'database'"):
        env.reset(Example("s", MESSAGES))
    with pytest.raises(ValueError, match="does not exist"):
        env.reset(Example("s", MESSAGES, metadata={"database": str(tmp_path / "missing.sqlite")}))


def test_python_runs_code_in_the_sandbox_and_contains_failures():
    env = make_environment(EnvironmentConfig(name="python", timeout_s=3.0), Example("p", MESSAGES))
    assert ask(env, "python", code="print(123 * 45)") == ("5535\n", 0)
    content, errors = ask(env, "python", code="x = 1\nprint('before')\n1 / 0")
    assert errors == 1 and content.startswith("Error: error (exit 1)")
    assert "before" in content and "ZeroDivisionError" in content
    start = time.monotonic()
    content, errors = ask(env, "python", code="import time\ntime.sleep(60)")
    assert errors == 1 and content.startswith("Error: timeout") and time.monotonic() - start < 8
    assert ask(env, "python", code="print('again')") == ("again\n", 0)
    assert ask(env, "python", code="x = 1")[0].startswith("(no output")
