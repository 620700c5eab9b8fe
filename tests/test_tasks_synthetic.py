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
    task = get_task("simple_spelling", split="train", size=200, seed=3)
    row = task[0]
    word = row["answer"].replace(" ", "")
    assert row["messages"][1]["content"] == row["answer"] == " ".join(word) and word in row["messages"][0]["content"]
    assert task.evaluate(row, " " + row["answer"] + "\n") and not task.evaluate(row, row["answer"][:-1])
    prompts = {r["messages"][0]["content"].replace(r["answer"].replace(" ", ""), "W") for r in task}
    assert {"Spell W", "How do you spell W?", 'Spell "W"'} <= prompts  # the request is phrased several ways
    # deterministic and prefix-stable; every split draws from the most frequent words, with its own stream
    assert get_task("simple_spelling", size=10, seed=3).dataset[:]["messages"] == task.dataset[:10]["messages"]
    test_rows = get_task("simple_spelling", split="test", size=50, seed=3)
    test_words = [r["answer"].replace(" ", "") for r in test_rows]
    assert set(test_words) <= set(corpus_words()[:SIMPLE_SPELLING_WORDS])
    assert test_words != [r["answer"].replace(" ", "") for r in task][:50]


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
    task = get_task("arithmetic", size=600, seed=1)
    three, tight, spaced, symbols, words, templates = 0, 0, 0, set(), 0, set()
    for row in task:
        call, output, final = row["messages"][1]["content"]
        expr, question = call["text"], row["messages"][0]["content"]
        assert call["type"] == "python"
        assert re.fullmatch(r"\d{1,3}( ?[-+*x×] ?\d{1,3}){1,2}", expr), expr
        # an independent check: Python's own precedence on the expression with * for x and ×
        value = eval(expr.replace("x", "*").replace("×", "*"), {"__builtins__": {}})
        assert output["text"] == str(value) == row["answer"] and final["text"] == f"#### {value}"
        if expr in question:  # the call copies the question's expression as written ...
            tight += bool(re.search(r"\d[-+*x×]\d", expr))
            spaced += " " in expr
            symbols |= set(re.findall(r"[-+*x×]", expr))
            templates.add(question.replace(expr, "E"))
        else:  # ... or the question says it in words
            a, op, b = expr.split()
            assert f"{a} {dict(zip('+-*', ('plus', 'minus', 'times')))[op]} {b}" in question
            words += 1
        three += len(re.findall(r"[-+*x×]", expr)) == 2
    assert 80 < three < 220  # about a quarter have three operands
    assert tight > 60 and spaced > 300 and symbols == set("+-*x×") and 40 < words < 130
    assert {"What is E?", "E = ?", "Calculate E."} <= templates and len(templates) >= 12
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
