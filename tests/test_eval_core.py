"""CORE: the `core` metric module, bundle parsing, prompts, spans and scoring on real bundle rows."""

import socket

import pytest
import torch

from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM
from hf_nanogpt.evaluation import metric_path
from hf_nanogpt.evaluation.core import (
    CoreTask,
    bos_id,
    evaluate_core,
    evaluate_task,
    fewshot_indices,
    load_bundle,
    load_task_data,
    render_prompts,
    score_sequences,
    score_spans,
)


@pytest.fixture(scope="module")
def bundle(shared_data):
    return shared_data / "eval_bundle"


@pytest.fixture(scope="module")
def tasks(bundle):
    return {t.label: t for t in load_bundle(bundle)}


@pytest.fixture(scope="module")
def tok(tiny_tokenizer):
    return tiny_tokenizer


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    cfg = NanoGPTConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        max_position_embeddings=512)
    return NanoGPTForCausalLM(cfg).eval()


def _with_data(task: CoreTask, n: int | None = None) -> CoreTask:
    task.data = load_task_data(task)[:n] if n else load_task_data(task)
    return task


# ------------------------------------------------------------------------------ the metric module
def test_centered_accuracy_hand_checked(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")
    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    import evaluate

    metric = evaluate.load(metric_path("core"), keep_in_memory=True)
    # copa (baseline 50%): 3 of 4 right -> acc 0.75, centered (0.75 - 0.5) / 0.5 = 0.5
    # arc_easy (25%): 1 of 2 right -> acc 0.5, centered (0.5 - 0.25) / 0.75 = 1/3
    # lambada (0%): 0 of 1 -> 0.0; CORE = (0.5 + 1/3 + 0) / 3 = 5/18
    out = metric.compute(
        predictions=[1, 0, 1, 1, 2, 3, -1], references=[1, 0, 1, 0, 2, 1, 0],
        tasks=["copa"] * 4 + ["arc_easy"] * 2 + ["lambada_openai"],
        random_baselines={"copa": 50, "arc_easy": 25, "lambada_openai": 0},
        expected_tasks=["copa", "arc_easy", "lambada_openai", "squad"],
    )
    assert out["accuracy"] == {"copa": 0.75, "arc_easy": 0.5, "lambada_openai": 0.0}
    assert out["centered"]["copa"] == pytest.approx(0.5)
    assert out["centered"]["arc_easy"] == pytest.approx(1 / 3)
    assert out["core"] == pytest.approx(5 / 18)
    assert out["tasks_missing"] == ["squad"]
    with pytest.raises(ValueError, match="no random baseline for task 'copa'"):
        metric.compute(predictions=[0], references=[0], tasks=["copa"], random_baselines={})


# ------------------------------------------------------------------------------ bundle and prompts
def test_bundle_has_22_tasks_and_names_the_absent_ones(tasks):
    assert len(tasks) == 22
    absent = sorted(label for label, t in tasks.items() if t.file is None)
    assert absent == ["coqa", "hellaswag", "hellaswag_zeroshot", "squad"]
    assert tasks["arc_easy"].continuation_delimiter == "\nAnswer: " and tasks["copa"].continuation_delimiter == " "


def test_bundle_errors_name_the_problem(tmp_path):
    (tmp_path / "core.yaml").write_text("tasks:\n  - {label: x, task_type: cloze, num_fewshot: 0, random_baseline: 0}\n")
    with pytest.raises(ValueError, match=r"tasks\[0\] \(x\): task_type 'cloze'"):
        load_bundle(tmp_path)
    (tmp_path / "core.yaml").write_text("tasks:\n  - {label: x, file: x.jsonl, task_type: schema, num_fewshot: 0, random_baseline: 50}\n")
    (tmp_path / "x.jsonl").write_text('{"context_options": ["a", "b"], "continuation": "c", "gold": 0}\n{"context_options": ["a"]}\n')
    with pytest.raises(ValueError, match=r"x.jsonl, line 2: schema row lacks key 'continuation'"):
        load_task_data(load_bundle(tmp_path)[0])
    with pytest.raises(FileNotFoundError, match="core.yaml"):
        load_bundle(tmp_path / "nowhere")


def test_fewshot_sampling_is_deterministic_and_excludes_the_item():
    a = fewshot_indices(100, 7, 10)
    assert a == fewshot_indices(100, 7, 10) and len(set(a)) == 10 and 7 not in a
    assert a != fewshot_indices(100, 8, 10)
    assert sorted(fewshot_indices(4, 2, 10)) == [0, 1, 3]  # capped at the rest of the task


def test_prompts_hand_checked(tasks):
    copa = _with_data(tasks["copa"], 2)
    row = copa.data[0]
    assert render_prompts(copa, row, []) == [
        "The man turned on the faucet, therefore the toilet filled with water.",
        "The man turned on the faucet, therefore water flowed from the spout.",
    ]
    shot = copa.data[1]  # gold 1: "she lost her appetite."
    assert render_prompts(copa, row, [shot])[0] == (
        "The girl found a bug in her cereal, therefore she lost her appetite.\n\n"
        "The man turned on the faucet, therefore the toilet filled with water.")
    wino = _with_data(tasks["winograd"], 1)
    assert render_prompts(wino, wino.data[0], []) == [
        "The city councilmen refused the demonstrators a permit because the city councilmen feared violence.",
        "The city councilmen refused the demonstrators a permit because the demonstrators feared violence.",
    ]
    jeo = _with_data(tasks["jeopardy"], 1)
    without, with_cont = render_prompts(jeo, jeo.data[0], [])
    assert without == "WORLD HISTORY: This Navy commander flew from a base at Little America to the South Pole & back Nov. 28-29, 1929\nAnswer:"
    assert with_cont == without + " Admiral Richard Byrd"


@pytest.mark.parametrize("label", ["copa", "winograd", "lambada_openai"])
def test_spans_cover_the_answer_tokens(tasks, tok, label):
    task = _with_data(tasks[label], 3)
    bos = bos_id(tok)
    for row in task.data:
        ids = [[bos] + tok(p, add_special_tokens=False)["input_ids"] for p in render_prompts(task, row, [])]
        for k, (seq, start, end) in enumerate(score_spans(task.task_type, ids)):
            assert seq[0] == bos and 1 <= start < end == len(seq)
            span = tok.decode(seq[start:end]).strip()
            if task.task_type == "multiple_choice":
                assert span and row["choices"][k].endswith(span)
            elif task.task_type == "schema":
                assert span.endswith(row["continuation"])
            else:
                assert span == row["continuation"]


# ------------------------------------------------------------------------------ scoring
@pytest.mark.parametrize("label", ["copa", "arc_easy", "winogrande", "lambada_openai", "bigbench_operators"])
def test_each_task_type_scored_like_an_unbatched_reference(tasks, tok, model, label):
    """Batched, right-padded scoring of real rows (with few-shot context) gives the same choice and
    the same losses as scoring each candidate alone through the model's own `labels=` loss."""
    task = _with_data(tasks[label])
    items = list(range(4))
    batched = evaluate_task(model, tok, task, items, max_len=512, batch_tokens=1 << 20)
    alone = evaluate_task(model, tok, task, items, max_len=512, batch_tokens=1)
    assert batched == alone
    bos = bos_id(tok)
    for i, (pred, gold) in zip(items, batched):
        shots = [task.data[j] for j in fewshot_indices(len(task.data), i, task.num_fewshot)]
        ids = [[bos] + tok(p, add_special_tokens=False)["input_ids"] for p in render_prompts(task, task.data[i], shots)]
        spans = [(s[-512:], max(1, a - max(0, len(s) - 512)), b - max(0, len(s) - 512)) for s, a, b in score_spans(task.task_type, ids)]
        ours = score_sequences(model, spans, pad_id=bos)
        losses = []
        for (seq, start, end), (loss, _) in zip(spans, ours):
            x = torch.tensor([seq])
            labels = x.clone()
            labels[:, :start] = -100
            with torch.no_grad():
                ref = model(input_ids=x, labels=labels).loss.item()
            assert loss == pytest.approx(ref, rel=1e-4, abs=1e-5)
            losses.append(ref)
        if task.task_type == "language_modeling":
            assert pred in (0, -1) and gold == 0
        else:
            assert gold == task.data[i]["gold"] and pred == min(range(len(losses)), key=losses.__getitem__)


def test_greedy_match_detects_the_models_own_continuation(tok, model):
    bos = bos_id(tok)
    prompt = [bos] + tok("The country of Novosibirsk is", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=4, do_sample=False)[0].tolist()
    n = len(prompt)
    wrong = out[:-1] + [(out[-1] + 1) % model.config.vocab_size]
    (_, hit), (_, miss) = score_sequences(model, [(out, n, len(out)), (wrong, n, len(wrong))], pad_id=bos)
    assert hit is True and miss is False


def test_evaluate_core_reports_tasks_present_and_missing(bundle, tok, model):
    result = evaluate_core(model, tok, bundle, max_per_task=3, tasks=["copa", "winograd", "lambada_openai"])
    assert result["num_examples"] == {"copa": 3, "winograd": 3, "lambada_openai": 3}
    assert result["core"] == pytest.approx(sum(result["centered"].values()) / 3)
    assert len(result["tasks_missing"]) == 19
    assert result["missing_reasons"]["squad"].startswith("not in the bundle")
    assert result["missing_reasons"]["arc_easy"] == "not selected"
    assert set(result["seconds"]) == {"copa", "winograd", "lambada_openai"}
    with pytest.raises(ValueError, match="unknown task"):
        evaluate_core(model, tok, bundle, tasks=["hellaswag_tiny"])
