"""BLEU / chrF of generations (hf_nanogpt.evaluation.generation, scripts/gen_eval.py)."""

import json
import runpy

import pytest
import sacrebleu
import torch

from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM
from hf_nanogpt.evaluation.generation import corpus_scores, generate_texts, load_pairs, reply_text

HYPS = ["The cat sat on the mat.", "It is raining in Paris today", "def add(a, b): return a + b"]
REFS = ["The cat is sitting on the mat.", "Today it rains in Paris.", "def add(a, b):\n    return a + b"]
REFS2 = ["A cat sat on a mat.", "It is raining in Paris.", "def add(x, y): return x + y"]


def test_scores_are_sacrebleus_own():
    got = corpus_scores(HYPS, [[r] for r in REFS])
    assert got["BLEU"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score, abs=1e-9)
    assert got["chrF"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score, abs=1e-9)
    assert 0 < got["BLEU"] < 100 and got["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    two = corpus_scores(HYPS, [[a, b] for a, b in zip(REFS, REFS2)])  # rows of references -> sacrebleu streams
    assert two["BLEU"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS, REFS2]).score, abs=1e-9)
    assert two["BLEU"] > got["BLEU"] and "nrefs:2" in two["bleu_signature"]
    perfect = corpus_scores(REFS, [[r] for r in REFS])
    assert perfect["BLEU"] == pytest.approx(100.0) and perfect["chrF"] == pytest.approx(100.0)
    assert corpus_scores(["zzz qqq"], [["the cat"]])["BLEU"] == 0.0
    with pytest.raises(ValueError, match="2 hypotheses but 1 reference lists"):
        corpus_scores(HYPS[:2], [["x"]])


def test_load_pairs_checks_every_line(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "a", "reference": "b"}\n\n{"prompt": "c", "reference": ["d"]}\n')
    assert load_pairs(good) == [{"prompt": "a", "references": ["b"]}, {"prompt": "c", "references": ["d"]}]
    cases = {'{"prompt": "a"}': r"bad.jsonl, line 1: 'reference' must be a string",
             '{"reference": "b"}': r"bad.jsonl, line 1: expected an object with a string 'prompt'",
             "not json": r"bad.jsonl, line 1: not valid JSON",
             '{"prompt": "a", "reference": ["b"]}\n{"prompt": "c", "reference": ["d", "e"]}':
                 r"bad.jsonl, line 2: 2 references, but earlier rows have 1"}
    for text, message in cases.items():
        (tmp_path / "bad.jsonl").write_text(text + "\n")
        with pytest.raises(ValueError, match=message):
            load_pairs(tmp_path / "bad.jsonl")
    with pytest.raises(FileNotFoundError, match="missing.jsonl does not exist"):
        load_pairs(tmp_path / "missing.jsonl")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    torch.manual_seed(0)
    model = NanoGPTForCausalLM(NanoGPTConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=2, max_position_embeddings=128))
    path = tmp_path_factory.mktemp("gen_model")
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def test_script_scores_its_own_generations(model_dir, repo_root, tmp_path, tiny_tokenizer, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": h, "reference": r}) + "\n" for h, r in zip(HYPS, REFS)))
    main = runpy.run_path(str(repo_root / "scripts" / "gen_eval.py"))["main"]
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0 and "python scripts/gen_eval.py" in capsys.readouterr().out
    for fmt in ("chat", "completion"):
        out = main(["--model", str(model_dir), "--data", str(data), "--prompt_format", fmt, "--max_tokens", "8",
                    "--output", str(tmp_path / f"{fmt}.json"), "--run_dir", str(tmp_path / "run")])
        saved = json.loads((tmp_path / f"{fmt}.json").read_text())
        generations = [s["generation"] for s in saved["samples"]]
        assert len(generations) == 3 and saved["rows"] == 3 and out["BLEU"] == saved["BLEU"]
        assert saved["BLEU"] == pytest.approx(sacrebleu.corpus_bleu(generations, [REFS]).score, abs=1e-9)
        assert saved["chrF"] == pytest.approx(sacrebleu.corpus_chrf(generations, [REFS]).score, abs=1e-9)
    section = json.loads((tmp_path / "run" / "report" / "gen-eval.json").read_text())["data"]
    assert section["BLEU"] == saved["BLEU"] and section["rows"] == 3
    with pytest.raises(SystemExit, match="gen_eval: generation data .*nope.jsonl does not exist"):
        main(["--model", str(model_dir), "--data", str(tmp_path / "nope.jsonl")])


def test_greedy_generation_matches_the_engine_and_drops_tool_blocks(model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    from hf_nanogpt.engine import Engine
    from hf_nanogpt.tokenization import render_for_completion

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    texts = generate_texts(model, tiny_tokenizer, ["hello"], "chat", max_tokens=6)
    tokens, _ = Engine.from_tokenizer(model, tiny_tokenizer).generate_batch(
        render_for_completion(tiny_tokenizer, [{"role": "user", "content": "hello"}]), max_tokens=6, temperature=0.0)
    assert texts == [reply_text(tiny_tokenizer.decode(tokens[0], skip_special_tokens=False))]
    assert reply_text(" 2+2 is <|python_start|>2+2<|python_end|><|output_start|>4<|output_end|>4. ") == "2+2 is 4."
    with pytest.raises(ValueError, match="prompt_format='raw'"):
        generate_texts(model, tiny_tokenizer, ["x"], "raw")
