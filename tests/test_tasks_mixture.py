"""Mixtures: repeat / weight / stop counts, deterministic shuffling, errors, and SFT batching on top."""

import json
from collections import Counter

import pytest

from hf_nanogpt.data import build_sft_loader
from hf_nanogpt.tasks import build_mixture, get_task


@pytest.fixture()
def identity_file(tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"who are you {i}?"},
                          {"role": "assistant", "content": "4" if i == 0 else f"hf_nanogpt {i}"}]} for i in range(4)]
    path = tmp_path / "identity.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def spec(identity_file):
    return [{"task": "arithmetic", "size": 20, "repeat": 3},
            {"task": "spelling_bee", "size": 10, "weight": 1.5},
            {"task": "simple_spelling", "size": 50, "stop": 7},
            {"task": "customjson", "path": str(identity_file), "weight": 0.5}]


def test_counts_follow_repeat_weight_and_stop(identity_file):
    mix = build_mixture(spec(identity_file), seed=0)
    assert Counter(mix["task"]) == {"arithmetic": 60, "spelling_bee": 15, "simple_spelling": 7, "customjson": 2}
    assert mix.column_names == ["messages", "task"]
    rows = lambda name: [json.dumps(r["messages"]) for r in mix if r["task"] == name]  # noqa: E731
    arithmetic = Counter(rows("arithmetic"))
    assert len(arithmetic) == 20 and set(arithmetic.values()) == {3}  # every row exactly three times
    bee = Counter(rows("spelling_bee"))
    assert len(bee) == 10 and sorted(bee.values()) == [1] * 5 + [2] * 5  # once, plus a seeded half again
    first7 = {json.dumps(r["messages"]) for r in get_task("simple_spelling", size=7)}
    assert set(rows("simple_spelling")) == first7  # stop keeps the first rows


def test_mixture_is_deterministic_and_shuffled(identity_file):
    a, b = build_mixture(spec(identity_file), seed=0), build_mixture(spec(identity_file), seed=0)
    c = build_mixture(spec(identity_file), seed=1)
    assert a["messages"] == b["messages"] and a["messages"] != c["messages"]
    assert len(set(a["task"][:20])) >= 3  # tasks are interleaved, not in blocks


def test_json_like_contents_survive(identity_file):
    mix = build_mixture([{"task": "customjson", "path": str(identity_file)}])
    assert "4" in [r["messages"][1]["content"] for r in mix]  # a string, not the number 4


def test_bad_entries(identity_file):
    for entry, message in [
        ({"size": 3}, "mixture entry 0: expected a mapping with a 'task' key"),
        ({"task": "arithmetic", "repeat": 2, "weight": 1.0}, r"give 'repeat' or 'weight', not both"),
        ({"task": "arithmetic", "repeat": 0}, r"repeat must be an integer >= 1, got 0"),
        ({"task": "arithmetic", "weight": -1}, r"weight must be a number > 0, got -1"),
        ({"task": "arithmetic", "stop": 0}, r"stop must be an integer >= 1, got 0"),
        ({"task": "trivia"}, "unknown task 'trivia'"),
    ]:
        with pytest.raises(ValueError, match=message):
            build_mixture([entry])
    with pytest.raises(ValueError, match="a mixture is a non-empty list"):
        build_mixture([])


def test_mixture_feeds_the_sft_loader(identity_file, tiny_tokenizer):
    mix = build_mixture(spec(identity_file), seed=0)
    loader = build_sft_loader(mix, tiny_tokenizer, batch_size=8, seq_len=64, mode="pack", epochs=1)
    batches = list(loader)
    assert batches and sum(int((b["shift_labels"] != -100).sum()) for b in batches) > 0


def test_optional_entries_with_missing_data_are_skipped(identity_file, tmp_path, caplog):
    mixed = build_mixture([{"task": "customjson", "path": str(identity_file)},
                           {"task": "customjson", "path": str(tmp_path / "absent.jsonl"), "optional": True}])
    assert len(mixed) == len(build_mixture([{"task": "customjson", "path": str(identity_file)}]))
    assert "skipped, its data is missing" in caplog.text and "absent.jsonl" in caplog.text
    with pytest.raises(FileNotFoundError, match="absent.jsonl"):  # not optional: still an error
        build_mixture([{"task": "customjson", "path": str(tmp_path / "absent.jsonl")}])
    with pytest.raises(ValueError, match="every entry was optional and missing"):
        build_mixture([{"task": "customjson", "path": str(tmp_path / "absent.jsonl"), "optional": True}])
