"""Chat tasks from local files in the hub schema: ARC, MMLU, GSM8K, SmolTalk, CustomJSON."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hf_nanogpt.tasks import TASKS, get_task
from hf_nanogpt.tasks.gsm8k import solution_parts
from hf_nanogpt.tokenization import render_conversation


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ARC_ROWS = [
    {"id": "Mercury_1", "question": "Which gas do plants absorb?", "answerKey": "B",
     "choices": {"text": ["oxygen", "carbon dioxide", "helium", "neon"], "label": ["A", "B", "C", "D"]}},
    {"id": "NYSEDREGENTS_2", "question": "What melts ice fastest?", "answerKey": "3",
     "choices": {"text": ["wood", "shade", "salt", "sand"], "label": ["1", "2", "3", "4"]}},
]


def test_arc_multiple_choice(tmp_path, tiny_tokenizer):
    task = get_task("arc_challenge", split="test", path=write_jsonl(tmp_path / "arc.jsonl", ARC_ROWS))
    assert task.name == "arc_challenge" and task.eval_type == "categorical" and len(task) == 2
    row = task[1]
    assert row["letters"] == ["A", "B", "C", "D"] and row["answer"] == "C"  # "1".."4" relabelled by position
    assert "C. salt" in row["messages"][0]["content"] and row["messages"][1]["content"] == "C"
    assert task.evaluate(row, " C") and not task.evaluate(row, "B")
    ids, mask = render_conversation(tiny_tokenizer, row["messages"])
    assert sum(mask) == len(tiny_tokenizer.encode("C")) + 1  # the letter and <|assistant_end|>
    bad = dict(ARC_ROWS[0], answerKey="E")
    with pytest.raises(ValueError, match=r"arc_easy row 0 \(Mercury_1\): answerKey 'E' is not one of the labels"):
        get_task("arc_easy", path=write_jsonl(tmp_path / "bad.jsonl", [bad]))


def test_mmlu_hub_schema_auxiliary_and_gauntlet(tmp_path, shared_data):
    rows = [{"question": "2+2?", "subject": "math", "choices": ["3", "4", "5", "6"], "answer": 1}]
    task = get_task("mmlu", split="test", path=write_jsonl(tmp_path / "mmlu.jsonl", rows))
    assert task[0]["answer"] == "B" and task[0]["subject"] == "math"
    nested = [{"train": dict(rows[0], answer=3)}]  # cais/mmlu auxiliary_train nests its rows
    for split in ("train", "auxiliary_train"):
        assert get_task("mmlu", split=split, path=write_jsonl(tmp_path / "aux.jsonl", nested))[0]["answer"] == "D"
    small = get_task("mmlu", split="test", path=shared_data / "chat_eval" / "mmlu_small.jsonl")
    assert len(small) == 4 and small[0]["answer"] == "B"
    prompt = small[0]["messages"][0]["content"]
    assert prompt.startswith("How is IP address spoofing detected?\n\nA. Installing and configuring a IDS")
    assert "\nD. Identify all TCP sessions" in prompt
    with pytest.raises(ValueError, match="expected question/choices/answer columns"):
        get_task("mmlu", path=write_jsonl(tmp_path / "x.jsonl", [{"q": 1}]))


def test_gsm8k_tool_calls_and_exact_match(shared_data, tiny_tokenizer):
    assert solution_parts("So 48/2 = <<48/2=24>>24 clips.\n#### 24") == [
        {"type": "text", "text": "So 48/2 = "}, {"type": "python", "text": "48/2"}, {"type": "output", "text": "24"},
        {"type": "text", "text": "24 clips.\n#### 24"}]
    task = get_task("gsm8k", split="test", path=shared_data / "chat_eval" / "gsm8k_test.jsonl")
    assert len(task) == 1319 and task.eval_type == "generative"
    row = task[0]
    assert row["answer"] == "18"
    parts = row["messages"][1]["content"]
    assert [p["type"] for p in parts].count("python") == [p["type"] for p in parts].count("output") >= 1
    assert task.evaluate(row, "She makes 9 * 2 = 18 dollars.\n#### 18")
    assert task.evaluate(row, "#### 18.0") and not task.evaluate(row, "#### 19") and not task.evaluate(row, "18")
    ids, mask = render_conversation(tiny_tokenizer, row["messages"])
    out_start = tiny_tokenizer.convert_tokens_to_ids("<|output_start|>")
    assert all(m == 0 for t, m in zip(ids, mask) if t == out_start)  # tool outputs are given, not learned
    big = get_task("gsm8k", split="test", path=shared_data / "chat_eval" / "gsm8k_train.jsonl")
    assert task.evaluate({"answer": "1234"}, "#### 1,234") and len(big) == 7473


def test_smoltalk_from_parquet(tmp_path, tiny_tokenizer):
    convs = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
              {"role": "assistant", "content": "Hello!"}],
             [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},  # JSON-like strings
              {"role": "user", "content": "true"}, {"role": "assistant", "content": "null"}]]
    path = tmp_path / "smol.parquet"
    pq.write_table(pa.table({"messages": convs, "source": ["a", "b"]}), path)
    task = get_task("smoltalk", path=path)
    assert len(task) == 2 and task[1]["messages"] == convs[1]
    render_conversation(tiny_tokenizer, task[0]["messages"])  # a system message is accepted by the renderer
    pq.write_table(pa.table({"messages": [convs[0][1:2]]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="smoltalk row 0: the last message must be the assistant's"):
        get_task("smoltalk", path=tmp_path / "bad.parquet")


def test_customjson_validates_with_line_numbers(tmp_path):
    good = {"messages": [{"role": "user", "content": "who are you?"}, {"role": "assistant", "content": "hf_nanogpt"}]}
    path = tmp_path / "identity.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(good["messages"]) + "\n")  # both forms
    task = get_task("customjson", path=path)
    assert len(task) == 2 and task[1]["messages"] == good["messages"]
    cases = [
        ('{"messages": [', r"line 1: not valid JSON"),
        ('{"msgs": []}', r"line 1: no 'messages' key \(keys: msgs\)"),
        ('{"messages": [{"role": "bot", "content": "x"}]}', r"line 1: message 0 has role 'bot'"),
        ('{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}',
         r"line 1: message 1 has role 'user' where 'assistant' is expected"),
        ('{"messages": [{"role": "user", "content": ["a"]}, {"role": "assistant", "content": "b"}]}',
         r"line 1: message 0 \(user\) content must be a string"),
        ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": [{"type": "code"}]}]}',
         r"line 1: message 1, part 0: expected"),
        ('{"messages": [{"role": "user", "content": "a"}]}', r"line 1: the last message must be the assistant's"),
    ]
    for line, message in cases:
        path.write_text(line + "\n")
        with pytest.raises(ValueError, match=r"identity\.jsonl, " + message):
            get_task("customjson", path=path)
    with pytest.raises(FileNotFoundError, match="CustomJSON file .*missing.jsonl does not exist"):
        get_task("customjson", path=tmp_path / "missing.jsonl")


def test_registry_errors(tmp_path):
    assert set(TASKS) == {"arc_easy", "arc_challenge", "mmlu", "gsm8k", "smoltalk", "customjson",
                          "simple_spelling", "spelling_bee", "arithmetic"}
    with pytest.raises(ValueError, match="unknown task 'hellaswag': expected one of arc_easy"):
        get_task("hellaswag")
    with pytest.raises(TypeError, match="task 'arithmetic': .*valid options: split, size, seed"):
        get_task("arithmetic", path="x")
    with pytest.raises(ValueError, match=r"bad\.jsonl, line 2: missing answer \(the hub schema of openai/gsm8k"):
        get_task("gsm8k", path=write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "answer": "#### 1"},
                                                                    {"question": "q"}]))
