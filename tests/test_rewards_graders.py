"""Rule-based graders: string_check, regex_format, text_similarity, json_schema, sql_result,
length_penalty, language_consistency."""

import sqlite3

import pytest

from rft_jax.data import Example
from rft_jax.data.tasks.sql import generate_sql
from rft_jax.rewards.json_schema import find_json, json_schema
from rft_jax.rewards.language_consistency import language_consistency
from rft_jax.rewards.length_penalty import length_penalty
from rft_jax.rewards.sql_result import sql_result, top_level_order_by
from rft_jax.rewards.string_check import regex_format, string_check
from rft_jax.rewards.text_similarity import bleu, rouge_l, text_similarity


def ex(reference=None, **metadata):
    return Example(id="x", messages=[{"role": "user", "content": "Question?"}], reference_answer=reference,
                   metadata=metadata)


def test_string_check_operations():
    e = ex("Paris")
    assert string_check(e, " Paris ") == 1.0
    assert string_check(e, "paris") == 0.0
    assert string_check(e, "paris", operation="ne") == 1.0
    assert string_check(e, "It is Paris.", operation="like") == 1.0
    assert string_check(e, "it is PARIS.", operation="ilike") == 1.0
    assert string_check(e, "It is Lyon.", operation="ilike") == 0.0
    assert string_check(e, "reasoning\nANSWER: Paris", extract="answer_line") == 1.0
    with pytest.raises(ValueError):
        string_check(e, "x", operation="approx")


def test_regex_format_where():
    assert regex_format(ex(), "blah <answer>3</answer>", pattern=r"<answer>\d+</answer>") == 1.0
    assert regex_format(ex(), "x\nDONE", pattern="DONE", where="last_line") == 1.0
    assert regex_format(ex(), "DONE\nx", pattern="DONE", where="last_line") == 0.0
    assert regex_format(ex(), "done", pattern="DONE", where="full", flags="i") == 1.0


def test_text_similarity_metrics_order_candidates_sensibly():
    ref = "the cat sat on the mat"
    assert text_similarity(ex(ref), ref, metric="fuzzy") == 1.0
    assert rouge_l("the cat sat on the mat", ref) == 1.0
    assert bleu("the cat sat on the mat", ref) == pytest.approx(1.0)
    close, far = "the cat sat on a mat", "dogs bark loudly at night"
    for metric in ("fuzzy", "rouge_l", "bleu"):
        assert text_similarity(ex(ref), close, metric=metric) > text_similarity(ex(ref), far, metric=metric)
    assert rouge_l(far, ref) == 0.0
    assert text_similarity(ex(ref), close, metric="rouge_l", pass_threshold=0.5) == 1.0


SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                           "address": {"type": "object"}},
          "required": ["name", "age"], "additionalProperties": False}
REF = {"name": "Ada", "age": 36, "address": {"city": "London", "zip": "N1"}}


def test_find_json_prefers_fenced_then_first_balanced():
    assert find_json('text ```json\n{"a": 1}\n``` more') == {"a": 1}
    assert find_json('Sure! {"a": {"b": [1, 2]}} done') == {"a": {"b": [1, 2]}}
    assert find_json("no json {here") is None


def test_json_schema_field_credit_and_penalties():
    e = ex(REF, schema=SCHEMA)
    assert json_schema(e, '```json\n{"name": "Ada", "age": 36, "address": {"city": "London", "zip": "N1"}}\n```'
                       ).score == 1.0
    half = json_schema(e, '{"name": "ada", "age": 35, "address": {"city": "London", "zip": "N2"}}')
    assert half.score == pytest.approx(0.5) and half.metrics["schema_valid"] == 1.0
    invalid = json_schema(e, '{"name": "Ada", "age": "36", "extra": 1}')
    assert invalid.metrics["schema_valid"] == 0.0 and invalid.score == pytest.approx(0.25 - 0.25)
    assert json_schema(e, "I cannot do that").score == -0.5
    assert json_schema(e, "{broken", malformed_penalty=1.0).score == -1.0


def test_json_schema_from_config_overrides_example():
    e = ex({"n": 1}, schema={"type": "array"})
    assert json_schema(e, '{"n": 1}', schema={"type": "object"}).score == 1.0


@pytest.fixture(scope="module")
def sql_example():
    return generate_sql(1, seed=0, levels=("easy",))[0]


def test_sql_result_matches_rows_order_insensitively(sql_example):
    e = Example(id="s", messages=sql_example.messages,
                reference_answer="SELECT name FROM customers WHERE city = 'Lyon'",
                metadata=sql_example.metadata)
    assert sql_result(e, "```sql\nSELECT name FROM customers WHERE city = 'Lyon' ORDER BY name DESC;\n```").score == 1.0
    assert sql_result(e, "SELECT name FROM customers").score == 0.0
    assert sql_result(e, "SELECT nme FROM customers").metrics["executed"] == 0.0


def test_sql_result_respects_reference_order(sql_example):
    e = Example(id="s", messages=sql_example.messages, reference_answer="SELECT id FROM customers ORDER BY id DESC",
                metadata=sql_example.metadata)
    assert sql_result(e, "SELECT id FROM customers ORDER BY id DESC").score == 1.0
    assert sql_result(e, "SELECT id FROM customers ORDER BY id").score == 0.0
    assert top_level_order_by("SELECT * FROM (SELECT a FROM t ORDER BY a) LIMIT 3") is False


@pytest.mark.parametrize("attack", [
    "DELETE FROM customers",
    "UPDATE customers SET name = 'x'",
    "DROP TABLE customers",
    "ATTACH DATABASE '/tmp/evil.db' AS evil",
    "SELECT 1; DELETE FROM customers",
    "PRAGMA query_only = OFF",
    "CREATE TABLE t (x)",
])
def test_sql_result_refuses_writes_and_attach(sql_example, attack, tmp_path):
    e = Example(id="s", messages=sql_example.messages, reference_answer="SELECT COUNT(*) FROM customers",
                metadata=sql_example.metadata)
    result = sql_result(e, attack)
    assert result.score == 0.0 and result.metrics["executed"] == 0.0


def test_sql_result_stops_long_queries_and_works_on_a_copy(tmp_path):
    db = tmp_path / "shop.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
    conn.commit()
    conn.close()
    e = ex("SELECT COUNT(*) FROM t", db_path=str(db))
    assert sql_result(e, "SELECT count(x) FROM t").score == 1.0
    slow = ("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT COUNT(*) FROM c")
    result = sql_result(e, slow, timeout_s=0.2)
    assert result.score == 0.0 and result.metrics["refused"] == 1.0
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM t").fetchone() == (100,)


def test_length_penalty_band():
    e = ex()
    assert length_penalty(e, "word " * 50, min_len=10, max_len=100) == 0.0
    assert length_penalty(e, "word " * 150, min_len=10, max_len=100) == pytest.approx(-0.5)
    assert length_penalty(e, "word " * 500, min_len=10, max_len=100) == -1.0
    assert length_penalty(e, "w", min_len=10, max_len=100, scale=9) == pytest.approx(-1.0)
    assert length_penalty(e, "abc", min_len=0, max_len=2, unit="chars", scale=2) == pytest.approx(-0.5)


def test_language_consistency_penalises_switching():
    e = ex()
    assert language_consistency(e, "The answer is four.") == 1.0
    mixed = language_consistency(e, "The answer is четыре, потому что два плюс два.")
    assert 0.0 < mixed < 0.6
    russian_prompt = Example(id="r", messages=[{"role": "user", "content": "Сколько будет два плюс два?"}])
    assert language_consistency(russian_prompt, "Четыре.") == 1.0
    assert language_consistency(russian_prompt, "Four.") == 0.0
    assert language_consistency(e, "Use `print('привет')` here.") == 1.0  # code is ignored
    assert language_consistency(e, "答案是四。 The answer is four.", script="cjk") < 0.5
