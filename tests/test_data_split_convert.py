"""Splitting and converting invocation logs."""

import collections
import json

from rft_jax.cli.data import main as data_main
from rft_jax.data import Example, load_dataset
from rft_jax.data.convert import convert_lines
from rft_jax.data.split import split_examples


def examples(n):
    return [Example(id=f"e{i}", messages=[{"role": "user", "content": f"q{i}"}], reference_answer=i,
                    metadata={"difficulty": i % 3}) for i in range(n)]


def test_split_is_seeded_disjoint_and_complete():
    data = examples(100)
    a = split_examples(data, {"train": 0.8, "validation": 0.1, "test": 0.1}, seed=3)
    b = split_examples(data, {"train": 0.8, "validation": 0.1, "test": 0.1}, seed=3)
    c = split_examples(data, {"train": 0.8, "validation": 0.1, "test": 0.1}, seed=4)
    ids = {k: [e.id for e in v] for k, v in a.items()}
    assert ids == {k: [e.id for e in v] for k, v in b.items()}
    assert ids != {k: [e.id for e in v] for k, v in c.items()}
    assert [len(v) for v in ids.values()] == [80, 10, 10]
    assert sorted(sum(ids.values(), [])) == sorted(e.id for e in data)


def test_stratified_split_keeps_each_stratum_proportional():
    data = examples(90)  # 30 per difficulty
    parts = split_examples(data, {"train": 2, "test": 1}, seed=0, stratify_by="difficulty")
    for name, want in (("train", 20), ("test", 10)):
        counts = collections.Counter(e.metadata["difficulty"] for e in parts[name])
        assert counts == {0: want, 1: want, 2: want}


def test_split_cli_writes_files(tmp_path, capsys):
    src = tmp_path / "all.jsonl"
    src.write_text("\n".join(json.dumps(e.to_record()) for e in examples(20)))
    assert data_main(["split", str(src), "--out-dir", str(tmp_path / "out"), "--fractions", "train=0.5,test=0.5",
                      "--stratify-by", "difficulty"]) == 0
    train, test = (load_dataset(str(tmp_path / "out" / f"{n}.jsonl")) for n in ("train", "test"))
    assert len(train) + len(test) == 20 and not {e.id for e in train} & {e.id for e in test}


def test_convert_invocation_logs_to_valid_rft_jsonl(tmp_path):
    logs = [
        {"id": "r1", "request": {"messages": [{"role": "user", "content": "hi"},
                                              {"role": "assistant", "content": "old"},
                                              {"role": "user", "content": "2+2?"}], "tools": None},
         "response": {"choices": [{"message": {"role": "assistant", "content": "4"}}]}, "metadata": {"team": "a"}},
        {"messages": [{"role": "user", "content": "capital of France?"}], "response": "Paris"},
        {"no": "messages"},
    ]
    records, skipped = convert_lines([json.dumps(r) for r in logs] + ["garbage"], response_as_reference=True)
    assert skipped == [3, 4]
    assert records[0]["reference_answer"] == "4" and records[0]["source_id"] == "r1" and records[0]["team"] == "a"
    assert records[0]["messages"][-1]["content"] == "2+2?"
    assert records[1]["reference_answer"] == "Paris"
    out = tmp_path / "rft.jsonl"
    out.write_text("\n".join(json.dumps(r) for r in records))
    assert [e.reference_answer for e in load_dataset(str(out), require_reference=True)] == ["4", "Paris"]
    kept, _ = convert_lines([json.dumps(logs[1])])
    assert kept[0]["logged_response"] == "Paris" and "reference_answer" not in kept[0]
