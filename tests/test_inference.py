"""int8 weights and compiled decoding (hf_nanogpt.inference, the engine's static-cache path, scripts/quantize.py)."""

import runpy

import pytest
import torch

from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM
from hf_nanogpt.engine import ChatTokens, Engine
from hf_nanogpt.inference import enable_compiled_decoding, load_for_inference, weights_bytes

torchao = pytest.importorskip("torchao", reason="torchao is the optional 'quantize' extra (pip install torchao)")


def _save(path, tokenizer, preset=None, **overrides):
    """A tiny model saved with the tokenizer: the class defaults, or a preset (`nanochat`: nanochat master)."""
    torch.manual_seed(0)
    fields = dict(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                  max_position_embeddings=128, bos_token_id=tokenizer.bos_token_id)
    fields.update(overrides)
    model = NanoGPTForCausalLM(NanoGPTConfig.from_preset(preset, **fields) if preset else NanoGPTConfig(**fields))
    with torch.no_grad():  # nanochat zero-inits the residual projections: make every matrix matter
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    path = tmp_path_factory.mktemp("inference_model")
    _save(path, tiny_tokenizer)
    return path


def _int8_weights(model) -> set[str]:
    return {n for n, p in model.named_parameters() if type(p.data).__name__ == "Int8Tensor"}


def test_int8_quantizes_every_linear_saves_and_reloads(model_dir, tmp_path, tiny_tokenizer):
    ref, _ = load_for_inference(model_dir)
    q, _ = load_for_inference(model_dir, quantize="int8")
    linears = {f"{n}.weight" for n, m in ref.named_modules() if isinstance(m, torch.nn.Linear)}
    assert _int8_weights(q) == linears and "lm_head.weight" in linears  # the untied head too
    x = torch.tensor([tiny_tokenizer("def f(x):\n    return x")["input_ids"]])
    with torch.no_grad():
        a, b = ref(x).logits, q(x).logits
    rel = (a - b).norm() / a.norm()
    assert 0 < rel < 0.02  # int8 per-row weights: close, not equal
    q.save_pretrained(tmp_path / "q")
    tiny_tokenizer.save_pretrained(tmp_path / "q")
    # int8 matrices with one float32 scale per row; the embedding and the rest stay float32
    lin = [m.weight for m in ref.modules() if isinstance(m, torch.nn.Linear)]
    expected = sum(w.numel() + 4 * w.shape[0] for w in lin) + 4 * sum(
        p.numel() for n, p in ref.named_parameters() if f"{n}" not in linears)
    assert abs(weights_bytes(tmp_path / "q") - expected) < 0.03 * expected
    assert weights_bytes(tmp_path / "q") < 0.5 * weights_bytes(model_dir)
    again, _ = load_for_inference(tmp_path / "q")  # the folder says it is quantized
    assert _int8_weights(again) == linears
    with torch.no_grad():
        torch.testing.assert_close(again(x).logits, b)
    # the quantized model generates through the engine like any other
    tokens, _ = Engine(again, ChatTokens(assistant_end=tiny_tokenizer.eos_token_id)).generate_batch(
        x[0].tolist(), max_tokens=5, temperature=0.0)
    assert len(tokens[0]) == 5


def test_a_tied_head_stays_float(tmp_path, tiny_tokenizer):
    _save(tmp_path / "tied", tiny_tokenizer, tie_word_embeddings=True)
    q, _ = load_for_inference(tmp_path / "tied", quantize="int8")
    assert "lm_head.weight" not in _int8_weights(q) and "model.layers.0.mlp.up_proj.weight" in _int8_weights(q)
    assert q.lm_head.weight is q.model.embed_tokens.weight


def test_nanochat_master_int8_keeps_the_gates_float(tmp_path, tiny_tokenizer):
    _save(tmp_path / "nc", tiny_tokenizer, preset="nanochat")
    ref, _ = load_for_inference(tmp_path / "nc")
    q, _ = load_for_inference(tmp_path / "nc", quantize="int8")
    gates = {"model.smear_gate.weight", "model.layers.1.self_attn.ve_gate.weight"}
    linears = {f"{n}.weight" for n, m in ref.named_modules() if isinstance(m, torch.nn.Linear)}
    assert gates < linears and _int8_weights(q) == linears - gates
    x = torch.tensor([tiny_tokenizer("def f(x):\n    return x")["input_ids"]])
    with torch.no_grad():
        a, b = ref(x).logits, q(x).logits
    assert 0 < (a - b).norm() / a.norm() < 0.02


def test_static_cache_decoding_matches_the_dynamic_engine(tmp_path, tiny_tokenizer):
    """The compiled path (static cache, explicit positions, rows kept in the batch) gives the same tokens, on a
    nanochat master model (smear's state in the cache, value embeddings, backout) with a sliding-window layer
    and a full one. The `eager` backend runs the graph dynamo captures, as inductor would receive it, without
    minutes of code generation (`bench.py generate` runs inductor)."""
    model = _save(tmp_path / "m", tiny_tokenizer, preset="nanochat", window_pattern="SL", sliding_window=8).eval()
    tokens = ChatTokens(assistant_end=tiny_tokenizer.eos_token_id, bos=tiny_tokenizer.bos_token_id)
    eager = Engine(model, tokens)
    assert eager.compiled is None
    enable_compiled_decoding(model, backend="eager")
    compiled = Engine(model, tokens)  # compile=None: follows the model's generation config
    assert compiled.compiled is not None
    prompt = tiny_tokenizer("for i in range(10):")["input_ids"]
    greedy = eager.generate_batch(prompt, max_tokens=16, temperature=0.0)[0][0]  # 16 tokens: past the window
    assert compiled.generate_batch(prompt, num_samples=3, max_tokens=16, temperature=0.0)[0] == [greedy] * 3
    sampled = dict(num_samples=3, max_tokens=16, temperature=1.0, top_k=20, seed=5)
    static, dynamic = compiled.generate_batch(prompt, **sampled)[0], eager.generate_batch(prompt, **sampled)[0]
    # One generator draws every row's token: once a row stops, the dynamic batch drops it and the other rows
    # get other random numbers (the static batch keeps it). Equal up to the first stop, stop included.
    first_stop = min(len(r) for r in dynamic) + 1
    assert [r[:first_stop] for r in static] == [r[:first_stop] for r in dynamic]
    model.generation_config.compile_config = None
    assert Engine(model, tokens).compiled is None


def test_quantize_script_and_chat_cli_flags(model_dir, repo_root, tmp_path, capsys):
    main = runpy.run_path(str(repo_root / "scripts" / "quantize.py"))["main"]
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0 and "python scripts/quantize.py" in capsys.readouterr().out
    out = main(["--model", str(model_dir), "--output_dir", str(tmp_path / "int8")])
    assert "x of" in capsys.readouterr().out and (out / "tokenizer.json").is_file()
    cli = runpy.run_path(str(repo_root / "scripts" / "chat_cli.py"))
    args = cli["parse_args"](["-i", str(out), "--quantize", "int8", "--compile"])
    assert args.quantize == "int8" and args.compile
    cli["main"](["-i", str(out), "-p", "hi", "-t", "0", "--max_tokens", "4"])  # the saved int8 folder chats
    with pytest.raises(SystemExit, match="quantize: model or tokenizer folder"):
        main(["--model", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "x")])


def test_generate_benchmark_reports_the_variants(model_dir, tmp_path, capsys):
    import inspect

    from hf_nanogpt.benchmarks import generate as bench

    (tmp_path / "val.txt").write_text(inspect.getsource(inspect) * 2)  # a small validation text
    results = bench.main(["--depth", "1", "--head_dim", "32", "--vocab_size", "512", "--context", "64",
                          "--prompt_tokens", "8", "--new_tokens", "6", "--samples", "2", "--repeats", "1",
                          "--variants", "int8,bf16+int8", "--model", str(model_dir), "--bpb_steps", "1",
                          "--bpb_data", f"{tmp_path / 'val.txt'}[:100%]"])
    rows = {r["variant"]: r for r in results["variants"]}
    assert list(rows) == ["eager float32", "int8", "bf16+int8"]
    base, q, qb = rows["eager float32"], rows["int8"], rows["bf16+int8"]
    assert base["speedup"] == 1.0 and q["tokens_per_s"] > 0 and len(q["tokens"]) == 6
    assert 0.3 < q["size_ratio"] < 0.5 and qb["size_ratio"] < q["size_ratio"]  # bf16 embedding: smaller still
    assert base["bpb_delta"] == 0.0 and abs(q["bpb_delta"]) < 0.05 * base["val_bpb"]
    assert "| int8 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench.main(["--variants", "int4"])
