"""Chat evals: ChatCORE, answer-letter scoring, generation scoring, HumanEval through the sandbox."""

import gzip
import json

import pytest
import torch

from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM
from hf_nanogpt.evaluation import load_metric
from hf_nanogpt.evaluation.chat import (
    canonical_task_name,
    chatcore_from_accuracies,
    evaluate_chat,
    load_chat_task,
    run_categorical,
    run_generative,
)
from hf_nanogpt.evaluation.humaneval import HumanEval, extract_code
from hf_nanogpt.tasks.base import Task, rows_to_dataset
from hf_nanogpt.tokenization import render_for_completion


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    torch.manual_seed(0)
    cfg = NanoGPTConfig(vocab_size=len(tiny_tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        max_position_embeddings=512, bos_token_id=tiny_tokenizer.bos_token_id,
                        eos_token_id=tiny_tokenizer.eos_token_id)
    return NanoGPTForCausalLM(cfg).eval()


def test_chatcore_hand_checked():
    # ARC-Easy 2/4 -> centered (0.5 - 0.25) / 0.75 = 1/3; GSM8K 1/4 -> 0.25 (baseline 0); mean 7/24
    out = load_metric("chat_core").compute(predictions=[1, 1, 0, 0, 1, 0, 0, 0],
                                           tasks=["ARC-Easy"] * 4 + ["GSM8K"] * 4)
    assert out["accuracy"] == {"ARC-Easy": 0.5, "GSM8K": 0.25}
    assert out["centered"]["ARC-Easy"] == pytest.approx(1 / 3)
    assert out["chatcore"] == pytest.approx(7 / 24)
    assert out["complete"] is False and out["tasks_missing"] == ["ARC-Challenge", "MMLU", "HumanEval", "SpellingBee"]
    merged = chatcore_from_accuracies({"arc_easy": 0.5, "gsm8k": 0.25})
    assert merged["chatcore"] == pytest.approx(7 / 24)
    with pytest.raises(ValueError, match="no baseline for task 'Trivia'"):
        load_metric("chat_core").compute(predictions=[1.0], tasks=["Trivia"])


def test_task_names():
    assert canonical_task_name("arc_easy") == "ARC-Easy" and canonical_task_name("spelling_bee") == "SpellingBee"
    with pytest.raises(ValueError, match="unknown chat task 'hellaswag'; choose from ARC-Easy"):
        canonical_task_name("hellaswag")


def test_arc_from_the_core_bundle(shared_data):
    task = load_chat_task("ARC-Easy")
    first = json.loads((shared_data / "eval_bundle" / "core" / "arc_easy.jsonl").open().readline())
    row = task[0]
    assert task.eval_type == "categorical" and len(task) == 2376
    question = row["messages"][0]["content"]
    assert first["query"].removeprefix("Question:").strip() in question
    assert all(f"{letter}. {choice}" in question for letter, choice in zip(row["letters"], first["choices"]))
    assert row["answer"] == "ABCD"[first["gold"]]


@pytest.mark.parametrize("name", ["ARC-Challenge", "MMLU"])
def test_categorical_picks_the_best_letter_logit(tiny_tokenizer, model, name, shared_data):
    task = load_chat_task(name)
    idx = list(range(4))
    batched = run_categorical(model, tiny_tokenizer, task, idx, batch_size=4)
    assert batched == run_categorical(model, tiny_tokenizer, task, idx, batch_size=1)
    for r in batched:
        row = task[r["index"]]
        prompt = torch.tensor([render_for_completion(tiny_tokenizer, row["messages"])])
        with torch.no_grad():
            last = model(input_ids=prompt).logits[0, -1]
        ids = [tiny_tokenizer.convert_tokens_to_ids(letter) for letter in row["letters"]]
        assert r["prediction"] == row["letters"][int(last[ids].argmax())]
        assert r["score"] == float(r["prediction"] == row["answer"])


def test_generative_scores_the_models_own_greedy_reply(tiny_tokenizer, model):
    """Rows whose reference is the model's greedy reply (from `generate`, independently) score 1."""
    questions = ["What is 2 + 3?", "Spell cat", "Name a colour."]
    rows = []
    for q in questions:
        msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": "?"}]
        prompt = torch.tensor([render_for_completion(tiny_tokenizer, msgs)])
        with torch.no_grad():
            out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6,
                                 do_sample=False, pad_token_id=tiny_tokenizer.bos_token_id)[0, prompt.shape[1]:].tolist()
        stop = [i for i, t in enumerate(out) if t in (tiny_tokenizer.eos_token_id, tiny_tokenizer.bos_token_id)]
        rows.append({"messages": msgs, "answer": tiny_tokenizer.decode(out[:stop[0]] if stop else out)})
    rows[2]["answer"] += " (not what the model says)"

    class Echo(Task):
        def evaluate(self, row, completion):
            return completion == row["answer"]

    res = run_generative(model, tiny_tokenizer, Echo(rows_to_dataset(rows)), [0, 1, 2], num_samples=1,
                         max_new_tokens=6, temperature=0.0)
    assert [r["score"] for r in res] == [1.0, 1.0, 0.0]
    assert [r["completion"] for r in res[:2]] == [rows[0]["answer"], rows[1]["answer"]]


def test_humaneval_task_runs_replies_in_the_sandbox(shared_data):
    path = shared_data / "chat_eval" / "HumanEval.jsonl.gz"
    task = HumanEval(path)
    assert len(task) == 164
    rows = [task[0], task[1]]
    replies = [[f"Here you go:\n```python\n{r['messages'][1]['content']}```\nDone.",
                "```python\nimport os\nos.system('echo hi')\n```"] for r in rows]
    assert task.evaluate_many(rows, replies) == [[True, False], [True, False]]
    assert task.evaluate(rows[0], rows[0]["canonical_solution"])  # a bare body continuing the prompt
    assert extract_code("```py\nx = 1\n") == "x = 1\n" and extract_code("x = 2") == "x = 2"
    with gzip.open(path, "rt") as f:
        assert json.loads(f.readline())["task_id"] == rows[0]["task_id"]


def test_evaluate_chat_names_sources_and_missing_tasks(tiny_tokenizer, model, shared_data):
    result = evaluate_chat(model, tiny_tokenizer, ["ARC-Easy", "gsm8k"], max_problems=2, max_new_tokens=4)
    arc, gsm = result["tasks"]["ARC-Easy"], result["tasks"]["GSM8K"]
    assert arc["num_problems"] == 2 and arc["source"].endswith("arc_easy.jsonl")
    assert gsm["source"] == str(shared_data / "chat_eval" / "gsm8k_test.jsonl") and "pass@1" in gsm
    assert result["chat_core"]["tasks_missing"] == ["ARC-Challenge", "MMLU", "HumanEval", "SpellingBee"]
    expected = ((arc["accuracy"] - 0.25) / 0.75 + gsm["accuracy"]) / 2
    assert result["ChatCORE"] == pytest.approx(expected)


def test_arithmetic_is_evaluated_but_kept_out_of_chatcore(tiny_tokenizer, model):
    result = evaluate_chat(model, tiny_tokenizer, ["SpellingBee", "arithmetic"], max_problems=3, max_new_tokens=4,
                           spelling_size=3)
    arith = result["tasks"]["Arithmetic"]
    assert arith["source"] == "synthetic" and arith["num_problems"] == 3 and 0.0 <= arith["accuracy"] <= 1.0
    assert set(result["chat_core"]["accuracy"]) == {"SpellingBee"}  # ChatCORE stays nanochat's definition
    assert result["ChatCORE"] == pytest.approx(result["tasks"]["SpellingBee"]["accuracy"])
    merged = chatcore_from_accuracies({"SpellingBee": 0.5, "Arithmetic": 1.0})
    assert merged["chatcore"] == pytest.approx(0.5)
