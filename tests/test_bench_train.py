"""bench train (what runs without a GPU): contenders per option, the FLOP / MFU convention shared by every
contender, the bf16 peak table, the dry run of d12 / d20 on the meta device (what `gpu_check.sh --dry-run`
prints), and scripts/gpu_check.sh's command line."""

import subprocess

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM
from hf_nanogpt.benchmarks import train as bench
from hf_nanogpt.training import gpu_peak_flops


def test_contenders_follow_the_options():
    label = lambda argv: [bench.label(r) for r in bench.contenders(bench.parse_args(argv))]  # noqa: E731
    assert label([]) == ["llama+adamw", "nanogpt+muon", "nanogpt+adamw", "nanogpt+muon compiled",
                         "llama+adamw compiled"]
    assert label(["--compile", "eager"]) == ["llama+adamw", "nanogpt+muon", "nanogpt+adamw"]
    assert label(["--device", "cuda", "--compile", "compiled", "--fp8", "--models", "nanogpt+muon", "llama+adamw"]) == \
        ["llama+adamw", "nanogpt+muon compiled", "llama+adamw compiled", "nanogpt+muon fp8 compiled"]
    args = bench.parse_args(["--size", "d20"])
    assert (args.depth, args.head_dim, args.vocab_size, args.seq_len) == (20, 128, 32768, 2048)
    assert bench.parse_args(["--accum", "2"]).accum == 2
    for bad in (["--fp8"], ["--models", "nanogpt+muon"], ["--steps", "0"], ["--accum", "0"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_flops_per_token_is_nanochats_convention_for_both_models():
    """6 x (all parameters but the token embedding) + 12 x heads x head_dim x seq_len x layers (the bench's
    default family, nanochat's January-2026 layout: no value embeddings or smear)."""
    cfg = NanoGPTConfig.from_depth(2, aspect_ratio=32, head_dim=32, vocab_size=128, max_position_embeddings=64,
                                   preset="nanochat_jan2026")
    nano = NanoGPTForCausalLM(cfg)
    d, L, V, T = 64, 2, 128, 64
    matmul = L * (4 * d * d + 2 * d * 4 * d) + V * d + 2 * L  # q, k, v, o, MLP up/down, head, residual scalars
    attn = L * 12 * 2 * 32 * T
    assert nano.flops_per_token(T) == 6 * matmul + attn
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=d, intermediate_size=8 * d // 3,
                                         num_hidden_layers=L, num_attention_heads=2, num_key_value_heads=2,
                                         head_dim=32, tie_word_embeddings=False))
    norms = (2 * L + 1) * d  # Llama's RMSNorm weights count as parameters
    assert bench.llama_flops_per_token(llama, T) == 6 * (L * (4 * d * d + 3 * d * (8 * d // 3)) + norms + V * d) + attn
    # MFU = FLOPs per token x tokens/s / peak
    peak, _ = gpu_peak_flops("NVIDIA H200")
    assert 0.4 == pytest.approx(bench.mfu(nano.flops_per_token(T), 0.4 * peak / nano.flops_per_token(T), peak))


def test_bf16_peak_table():
    assert gpu_peak_flops("NVIDIA H100 80GB HBM3")[0] == 989e12
    assert gpu_peak_flops("NVIDIA H100 PCIe")[0] == 756e12
    assert gpu_peak_flops("NVIDIA H200")[0] == 989e12
    assert gpu_peak_flops("NVIDIA A100-SXM4-80GB")[0] == 312e12
    peak, source = gpu_peak_flops("Some Future GPU")
    assert peak != peak and "peak unknown" in source  # nan: MFU not reported


def test_dry_run_sizes_d12_and_d20_on_the_meta_device():
    plan = bench.dry_run(bench.parse_args(["--device", "cuda", "--size", "d20", "--fp8"]))
    assert "nanogpt+muon fp8 compiled" in plan and "477,102,120 params" in plan and "3,240,100,080 FLOPs" in plan
    plan = bench.dry_run(bench.parse_args(["--device", "cuda", "--size", "d12"]))
    assert "135,266,328 params" in plan


def test_gpu_check_script_help_and_plan(repo_root):
    script = repo_root / "scripts" / "gpu_check.sh"
    out = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, check=True).stdout
    assert "at most ~8 minutes" in out and "--dry-run" in out
    bad = subprocess.run(["bash", str(script), "--nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument '--nope'" in bad.stderr
