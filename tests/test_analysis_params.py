"""Parameter statistics, histograms and training memory (hf_nanogpt.analysis.params, analyze.py params/sizes)."""

import runpy

import pytest
import torch

from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM
from hf_nanogpt.analysis.params import (NanoGPTSize, parameter_stats, role_totals, sizes_markdown, stats_markdown,
                                        step_memory, training_memory)

PNG = b"\x89PNG\r\n\x1a\n"


def tiny(**overrides):
    torch.manual_seed(0)
    fields = dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  max_position_embeddings=32)
    return NanoGPTForCausalLM(NanoGPTConfig(**{**fields, **overrides}))


def test_stats_cover_every_tensor_once_and_totals_match_the_model():
    model = tiny()
    rows = parameter_stats(model)
    assert len(rows) == len(list(model.parameters()))
    counts = model.parameter_counts()
    totals = role_totals(rows)
    assert (totals["embeddings"], totals["matrices"], totals["head"], totals["scalars"], totals["total"]) == (
        counts["embedding"], counts["matrices"], counts["lm_head"], counts["scalars"], counts["total"])
    by_name = {r["name"]: r for r in rows}
    w = model.model.layers[0].mlp.up_proj.weight
    row = by_name["model.layers.0.mlp.up_proj.weight"]
    assert row["role"] == "matrices" and row["shape"] == (128, 32) and row["count"] == 4096
    assert row["mean"] == pytest.approx(w.mean().item()) and row["std"] == pytest.approx(w.std().item())
    assert (row["min"], row["max"]) == (pytest.approx(w.min().item()), pytest.approx(w.max().item()))
    assert by_name["model.layers.0.self_attn.o_proj.weight"]["zeros"] == 1.0  # nanochat zero-inits it
    assert by_name["model.resid_lambdas"]["role"] == "scalars" and by_name["lm_head.weight"]["role"] == "head"
    md = stats_markdown(rows)
    assert "| `model.layers.0.mlp.up_proj.weight` | matrices | 128 x 32 | 4,096 |" in md
    assert f"| **total** | {counts['total']:,} | 100.0% |" in md


def test_nanochat_master_parts_have_their_roles():
    """Value embeddings, their gates, the smear gate and lambda, the backout lambda (nanochat master)."""
    torch.manual_seed(0)
    model = NanoGPTForCausalLM(NanoGPTConfig.nanochat(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                                      num_attention_heads=2, max_position_embeddings=32))
    rows = parameter_stats(model)
    role = {r["name"]: r["role"] for r in rows}
    assert role["model.value_embeds.1.weight"] == "value embeddings"
    assert role["model.layers.1.self_attn.ve_gate.weight"] == "matrices"
    assert {role[n] for n in ("model.smear_gate.weight", "model.smear_lambda", "model.backout_lambda")} == {"scalars"}
    counts, totals = model.parameter_counts(), role_totals(rows)
    assert (totals["embeddings"], totals["value embeddings"], totals["matrices"], totals["head"], totals["scalars"],
            totals["total"]) == (counts["embedding"], counts["value_embeds"], counts["matrices"], counts["lm_head"],
                                 counts["scalars"], counts["total"])
    assert "| value embeddings |" in stats_markdown(rows)


def test_tied_head_is_counted_once():
    model = tiny(**{k: v for k, v in NanoGPTConfig.gpt2().to_dict().items()
                    if k in ("position_embedding", "norm_type", "bias", "tie_word_embeddings", "qk_norm",
                             "embedding_norm", "residual_scalars", "final_logit_softcapping")})
    rows = parameter_stats(model)
    assert "lm_head.weight" not in {r["name"] for r in rows} and role_totals(rows)["head"] == 0
    assert role_totals(rows)["total"] == model.parameter_counts()["total"]


def test_fake_tensor_memory_equals_a_real_step():
    """The sizes table counts memory on fake tensors; on a small model a real step must count the same."""
    from hf_nanogpt.convert_nanogpt import nanogpt_config
    from hf_nanogpt.optim import build_optimizer

    config = nanogpt_config(dict(n_layer=1, n_head=2, n_embd=16, block_size=8, bias=False, vocab_size=65))
    fake = training_memory(config, batch_size=2, seq_len=8)
    torch.manual_seed(0)
    model = NanoGPTForCausalLM(config).train()
    real = step_memory(model, build_optimizer(model), torch.randint(0, 65, (2, 8)))  # real tensors
    assert fake == real
    assert fake["parameters"] == 4 * sum(p.numel() for p in model.parameters())  # float32
    assert fake["optimizer"] >= fake["parameters"]  # Muon momentum + AdamW moments
    assert sum(v for k, v in fake.items() if k != "total") == fake["total"]


def test_sizes_table_and_script(repo_root, tmp_path, tiny_tokenizer, capsys):
    size = NanoGPTSize("nano", "a test", dict(n_layer=1, n_head=2, n_embd=16, block_size=8, bias=False, vocab_size=65), 2)
    table = sizes_markdown([size])
    assert "| nano (a test) | 1 x 2 x 16, 8 | 65 | 0.00M |" in table and "| 2 x 8 |" in table and "MiB" in table
    model = tiny(vocab_size=len(tiny_tokenizer))
    model.save_pretrained(tmp_path / "m")
    tiny_tokenizer.save_pretrained(tmp_path / "m")
    main = runpy.run_path(str(repo_root / "scripts" / "analyze.py"))["main"]
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0 and "python scripts/analyze.py params" in capsys.readouterr().out
    written = main(["params", "--model", str(tmp_path / "m"), "--output_dir", str(tmp_path / "a")])
    assert [p.name for p in written] == ["params.md", "params_hist.png"]
    assert "| role | parameters | share |" in capsys.readouterr().out
    assert (tmp_path / "a" / "params_hist.png").read_bytes()[:8] == PNG
    with pytest.raises(SystemExit, match="analyze: model or tokenizer folder .*missing does not exist"):
        main(["params", "--model", str(tmp_path / "missing")])
