"""Synthetic tasks: the stdlib word list, SimpleSpelling, SpellingBee and Arithmetic with the calculator."""

import re
import statistics

import pytest

from hf_nanogpt.calculator import use_calculator
from hf_nanogpt.tasks import get_task
from hf_nanogpt.tasks.spelling import SIMPLE_SPELLING_WORDS, corpus_words
from hf_nanogpt.tokenization import render_conversation


def test_word_list_from_the_stdlib_corpus():
    words = corpus_words()
    assert len(words) > 2000 and len(set(words)) == len(words)
    assert all(w.isalpha() and w.islower() and 3 <= len(w) <= 10 for w in words)
    assert "self" in words[:5] and {"return", "import", "value"} <= set(words[:100])  # most frequent first


def test_simple_spelling():
    task = get_task("simple_spelling", split="train", size=50, seed=3)
    row = task[0]
    word = row["messages"][0]["content"].removeprefix("Spell ")
    assert row["messages"][1]["content"] == row["answer"] == " ".join(word)
    assert task.evaluate(row, " " + row["answer"] + "\n") and not task.evaluate(row, row["answer"][:-1])
    # deterministic and prefix-stable; every split draws from the most frequent words, with its own stream
    assert get_task("simple_spelling", size=10, seed=3).dataset[:]["messages"] == task.dataset[:10]["messages"]
    test_rows = get_task("simple_spelling", split="test", size=50, seed=3)
    test_words = [r["messages"][0]["content"].removeprefix("Spell ") for r in test_rows]
    assert set(test_words) <= set(corpus_words()[:SIMPLE_SPELLING_WORDS])
    assert test_words != [r["messages"][0]["content"].removeprefix("Spell ") for r in task]


def test_spelling_bee_uses_the_calculator():
    task = get_task("spelling_bee", size=200)
    counts = []
    for row in task:
        call, output, final = row["messages"][1]["content"]
        word, letter = call["text"].split('"')[1], call["text"].split('"')[3]
        assert f'"{word}"' in row["messages"][0]["content"] and letter in row["messages"][0]["content"]
        assert call["type"] == "python" and output["type"] == "output"
        assert output["text"] == use_calculator(call["text"]) == str(word.count(letter)) == row["answer"]
        assert final == {"type": "text", "text": f"#### {row['answer']}"}
        counts.append(int(row["answer"]))
    assert 0 in counts and max(counts) >= 2  # absent letters and repeated ones both occur
    row = task[0]
    assert task.evaluate(row, f"#### {row['answer']}") and not task.evaluate(row, f"#### {int(row['answer']) + 1}")


def test_arithmetic_uses_the_calculator():
    task = get_task("arithmetic", size=300, seed=1)
    three = 0
    for row in task:
        call, output, final = row["messages"][1]["content"]
        expr = call["text"]
        assert call["type"] == "python" and expr in row["messages"][0]["content"]
        assert re.fullmatch(r"\d{1,3}( [-+*] \d{1,3}){1,2}", expr)
        value = eval(expr, {"__builtins__": {}})  # an independent check: Python's own precedence, digits only
        tokens = expr.split()
        assert output["text"] == str(value) == row["answer"] and final["text"] == f"#### {value}"
        three += len(tokens) == 5
    assert 40 < three < 120  # about a quarter have three operands
    assert task.evaluate(task[0], "#### " + task[0]["answer"]) and not task.evaluate(task[0], task[0]["answer"])


def test_formats_are_short_for_tiny_models(tiny_tokenizer):
    """The synthetic tasks are meant to be learned by a ~1-4M-parameter model in minutes."""
    for name in ("simple_spelling", "spelling_bee", "arithmetic"):
        lengths, supervised = [], []
        for row in get_task(name, size=100):
            ids, mask = render_conversation(tiny_tokenizer, row["messages"])
            lengths.append(len(ids))
            supervised.append(sum(mask))
        assert statistics.mean(lengths) < 48 and statistics.mean(supervised) < 24, name
