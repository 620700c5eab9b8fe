"""Interop: a saved checkpoint runs under lm-evaluation-harness (`lm_eval --model hf`), offline, on a
local task, and lm_eval's accuracy equals the same scoring done with our model in-process.

The command this test runs (documented for users):

    lm_eval --model hf --model_args pretrained=DIR,trust_remote_code=True,dtype=float32 \\
            --tasks copa_local.yaml --device cpu --batch_size 4 --output_path OUT

with a task yaml that reads a local jsonl (`dataset_path: json`, `dataset_kwargs.data_files`) and
starts every context with `<|bos|>`, as our models are trained to see documents.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM
from hf_nanogpt.evaluation.core import score_sequences

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-evaluation-harness not installed")]

TASK_YAML = """task: copa_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "<|bos|>{{{{query}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def test_lm_eval_runs_a_saved_checkpoint_offline(tmp_path, tiny_tokenizer, shared_data):
    torch.manual_seed(0)
    model = NanoGPTForCausalLM(NanoGPTConfig(vocab_size=len(tiny_tokenizer), hidden_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, max_position_embeddings=256,
                                             bos_token_id=tiny_tokenizer.bos_token_id,
                                             eos_token_id=tiny_tokenizer.eos_token_id)).eval()
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    rows = [json.loads(line) for line in (shared_data / "eval_bundle" / "core" / "copa.jsonl").read_text().splitlines()[:24]]
    data = tmp_path / "copa24.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task_yaml = tmp_path / "copa_local.yaml"
    task_yaml.write_text(TASK_YAML.format(data=data))

    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_CACHE=str(tmp_path / "ds_cache"))
    out = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "hf",
         "--model_args", f"pretrained={model_dir},trust_remote_code=True,dtype=float32",
         "--tasks", str(task_yaml), "--device", "cpu", "--batch_size", "4", "--output_path", str(tmp_path / "out")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    acc = results["results"]["copa_local"]["acc,none"]

    # The same choice rule in-process: sum of log-likelihood of " " + choice after "<|bos|>" + query.
    bos = tiny_tokenizer.bos_token_id
    correct = 0
    for r in rows:
        ctx = [bos] + tiny_tokenizer(r["query"], add_special_tokens=False)["input_ids"]
        seqs = []
        for choice in r["choices"]:
            whole = [bos] + tiny_tokenizer(r["query"] + " " + choice, add_special_tokens=False)["input_ids"]
            seqs.append((whole, len(ctx), len(whole)))
        scores = [-loss * (e - s) for (loss, _), (_, s, e) in zip(score_sequences(model, seqs, bos), seqs)]
        correct += int(max(range(len(scores)), key=scores.__getitem__) == r["gold"])
    assert acc == pytest.approx(correct / len(rows))
