"""`data convert` on researchers' tables: verl Parquet files, plain columns and `datasets` save_to_disk folders."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rft_jax.cli.data import main as data_main
from rft_jax.data import load_dataset
from rft_jax.data.convert import Selection, convert_path
from rft_jax.data.tables import is_table, row_call

INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'
GSM8K = [
    ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
     "How many clips did Natalia sell altogether in April and May?",
     "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether.\n#### 72"),
    ("Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
     "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\n"
     "#### 10"),
    ("A factory makes 300 bolts a day. How many bolts does it make in 4 days?", "300 * 4 = 1200\n#### 1,200"),
]


def verl_rows(split="train"):
    """Rows as verl's examples/data_preprocess/gsm8k.py writes them."""
    return [{"data_source": "openai/gsm8k",
             "prompt": [{"role": "user", "content": f"{question} {INSTRUCTION}"}],
             "ability": "math",
             "reward_model": {"style": "rule", "ground_truth": answer.split("#### ")[1].replace(",", "")},
             "extra_info": {"split": split, "index": i, "answer": answer, "question": question}}
            for i, (question, answer) in enumerate(GSM8K)]


def write_save_to_disk(folder, rows, shards=2):
    """A folder shaped like `Dataset.save_to_disk`: dataset_info.json, state.json, data-*.arrow IPC streams."""
    folder.mkdir()
    table = pa.Table.from_pylist(rows)
    features = {name: {"dtype": "string", "_type": "Value"} for name in table.column_names}
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    names = [f"data-{i:05d}-of-{shards:05d}.arrow" for i in range(shards)]
    per_shard = -(-len(rows) // shards)
    for i, name in enumerate(names):
        with pa.ipc.new_stream(str(folder / name), table.schema) as writer:
            writer.write_table(table.slice(i * per_shard, per_shard), max_chunksize=1)
    (folder / "dataset_info.json").write_text(json.dumps({"citation": "", "description": "", "features": features,
                                                          "homepage": "", "license": ""}))
    (folder / "state.json").write_text(json.dumps({
        "_data_files": [{"filename": name} for name in names], "_fingerprint": "4c2d5d8a1f1e7b3c",
        "_format_columns": None, "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False,
        "_split": "train"}))


def test_verl_parquet_maps_prompt_ground_truth_and_extra_info(tmp_path, capsys):
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(verl_rows()), path)
    out = tmp_path / "train.jsonl"
    assert data_main(["convert", str(path), "--out", str(out)]) == 0
    assert "read 3 records: 3 converted, 0 skipped" in capsys.readouterr().out
    examples = load_dataset(str(out), require_reference=True)
    assert [e.reference_answer for e in examples] == ["72", "10", "1200"]
    first = examples[0]
    assert first.messages == [{"role": "user", "content": f"{GSM8K[0][0]} {INSTRUCTION}"}]
    assert first.metadata == {"data_source": "openai/gsm8k", "ability": "math", "reward_model": {"style": "rule"},
                              "split": "train", "index": 0, "answer": GSM8K[0][1], "question": GSM8K[0][0]}


def test_where_selects_table_rows_by_column_or_extra_info(tmp_path):
    path = tmp_path / "mixed.parquet"
    rows = verl_rows()
    rows[2]["data_source"] = "math_dataset"
    pq.write_table(pa.Table.from_pylist(rows), path)
    report, unit = convert_path(str(path), selection=Selection(where=(("data_source", "openai/gsm8k"),
                                                                      ("index", "1"))))
    assert unit == "row" and [r["index"] for r in report.records] == [1] and report.filtered == {"metadata": 2}
    with pytest.raises(ValueError, match="a table has no model or time"):
        convert_path(str(path), selection=Selection(models=("gpt-*",)))


def test_save_to_disk_folder_of_question_answer_pairs(tmp_path):
    folder = tmp_path / "gsm8k_train"
    write_save_to_disk(folder, [{"question": q, "answer": a} for q, a in GSM8K])
    assert is_table(str(folder))
    report, _ = convert_path(str(folder))
    assert [r["messages"] for r in report.records] == [[{"role": "user", "content": q}] for q, _ in GSM8K]
    assert [r["reference_answer"] for r in report.records] == [a for _, a in GSM8K]  # math_answer reads `####`


def test_plain_messages_columns_ids_tools_and_skipped_rows(tmp_path):
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    rows = [{"id": "q1", "messages": [{"role": "system", "content": "Be exact."}, {"role": "user", "content": "2+2?"}],
             "reference_answer": "4", "tools": [tool], "difficulty": 1},
            {"id": "q2", "messages": None, "reference_answer": "5", "tools": None, "difficulty": 2},
            {"id": "q3", "messages": [{"role": "user", "content": "2+2?"}, {"role": "user", "content": "2+2?"}],
             "reference_answer": "4", "tools": None, "difficulty": 1}]
    folder = tmp_path / "parquet_shards"  # a Hub dataset's folder of Parquet shards
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:2]), folder / "train-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(rows[2:]), folder / "train-00001-of-00002.parquet")
    report, _ = convert_path(str(folder))
    assert report.read == 3 and len(report.records) == 2
    first = report.records[0]
    assert first["id"] == "q1" and first["reference_answer"] == "4" and first["difficulty"] == 1
    assert first["tools"] == [tool] and first["messages"][0] == {"role": "system", "content": "Be exact."}
    [(source, number, why)] = report.skipped
    assert (source, number) == ("train-00000-of-00002.parquet", 2) and "no prompt, messages or question" in why
    summary = "\n".join(report.summary("row"))
    assert "skipped train-00000-of-00002.parquet row 2: no prompt" in summary


def test_verl_prompt_as_plain_string_and_a_datasetdict_folder_is_refused(tmp_path, capsys):
    call = row_call({"prompt": "What is 6*7?", "reward_model": {"ground_truth": 42, "style": None}})
    assert call.messages == [{"role": "user", "content": "What is 6*7?"}] and call.reference == 42
    assert "reward_model" not in call.metadata
    root = tmp_path / "gsm8k"
    root.mkdir()
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    write_save_to_disk(root / "train", [{"question": q, "answer": a} for q, a in GSM8K])
    assert data_main(["convert", str(root), "--out", str(tmp_path / "o.jsonl")]) == 1
    assert f"convert one split's folder, e.g. {root / 'train'}" in capsys.readouterr().err
    assert data_main(["convert", str(root / "train"), "--out", str(tmp_path / "o.jsonl")]) == 0
    assert len(load_dataset(str(tmp_path / "o.jsonl"))) == 3
