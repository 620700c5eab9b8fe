"""nanochat checkpoint import: golden parity with nanochat master's own outputs (logits, greedy decoding,
tokenizer ids, chat rendering), other shapes against a reference forward, refusals by name, the script."""

import json
import os
import pickle
import runpy
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_nanogpt import NanoGPTForCausalLM
from hf_nanogpt.convert_nanochat import (
    NanochatTokenizerUnpickler,
    convert_nanochat,
    load_nanochat_tokenizer,
    read_tiktoken_pickle,
)
from hf_nanogpt.engine import ChatTokens, Engine
from hf_nanogpt.tokenization import get_encoder, render_conversation, tiktoken_encoding


@pytest.fixture(scope="module")
def golden_dir(shared_data):
    folder = shared_data / "nanochat_golden" / "d4_gqa"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    return folder


@pytest.fixture(scope="module")
def golden(golden_dir):
    return load_file(str(golden_dir / "golden.safetensors"))


@pytest.fixture(scope="module")
def golden_model(golden_dir):
    return NanoGPTForCausalLM.from_nanochat(golden_dir, tokenizer_dir=golden_dir / "tokenizer")


@pytest.fixture(scope="module")
def golden_tokenizer(golden_dir):
    return load_nanochat_tokenizer(golden_dir / "tokenizer")


# ---------------------------------------------------------------------------------------------- a reference
# nanochat master's forward written out from its documented facts (issue 12), on nanochat's own parameter
# names, in the plainest torch. It is checked against nanochat's golden logits first, then used as the
# reference for checkpoint shapes the golden data does not cover.


def reference_logits(sd: dict, cfg: dict, ids: torch.Tensor) -> torch.Tensor:
    def norm(x):
        return F.rms_norm(x, (x.size(-1),))

    B, T = ids.shape
    L, H, KV, D = cfg["n_layer"], cfg["n_head"], cfg["n_kv_head"], cfg["n_embd"]
    hd = D // H
    x = norm(sd["transformer.wte.weight"][ids])
    gate = sd["smear_lambda"] * torch.sigmoid(x[:, 1:, :24] @ sd["smear_gate.weight"].T)
    x = torch.cat([x[:, :1], x[:, 1:] + gate * x[:, :-1]], dim=1)
    x0 = x
    inv = 1.0 / (100000 ** (torch.arange(0, hd, 2).float() / hd))
    ang = torch.arange(T).float()[:, None] * inv  # (T, hd/2)
    cos, sin = ang.cos()[None, :, None], ang.sin()[None, :, None]
    short = -(-cfg["sequence_len"] // 4 // 128) * 128
    pattern = cfg["window_pattern"]
    dist = torch.arange(T)[:, None] - torch.arange(T)[None]  # query - key
    kept = None
    for i in range(L):
        p = f"transformer.h.{i}."
        x = sd["resid_lambdas"][i] * x + sd["x0_lambdas"][i] * x0
        h = norm(x)
        q = (h @ sd[p + "attn.c_q.weight"].T).view(B, T, H, hd)
        k = (h @ sd[p + "attn.c_k.weight"].T).view(B, T, KV, hd)
        v = (h @ sd[p + "attn.c_v.weight"].T).view(B, T, KV, hd)
        if f"value_embeds.{i}.weight" in sd:
            g = 3 * torch.sigmoid(h[..., :12] @ sd[p + "attn.ve_gate.weight"].T)  # (B, T, KV)
            v = v + g[..., None] * sd[f"value_embeds.{i}.weight"][ids].view(B, T, KV, hd)

        def rot(t):
            a, b = t[..., : hd // 2], t[..., hd // 2:]
            return torch.cat([a * cos + b * sin, -a * sin + b * cos], dim=-1)

        q, k = norm(rot(q)) * 1.2, norm(rot(k)) * 1.2
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
        left = T if (i == L - 1 or pattern[i % len(pattern)] == "L") else short
        allowed = (dist >= 0) & (dist <= left)
        att = (q @ k.transpose(-1, -2) / hd**0.5).masked_fill(~allowed, float("-inf")).softmax(-1)
        x = x + (att @ v).transpose(1, 2).reshape(B, T, D) @ sd[p + "attn.c_proj.weight"].T
        x = x + F.relu(norm(x) @ sd[p + "mlp.c_fc.weight"].T).square() @ sd[p + "mlp.c_proj.weight"].T
        if i == L // 2:
            kept = x
    x = norm(x - sd["backout_lambda"] * kept)
    logits = (x @ sd["lm_head.weight"].T)[..., : cfg["vocab_size"]]
    return 15 * torch.tanh(logits / 15)


def write_checkpoint(folder, seed=0, step=0, **model_config):
    """A random nanochat-master checkpoint in nanochat's layout (every parameter non-degenerate)."""
    cfg = dict(sequence_len=160, vocab_size=300, n_layer=3, n_head=4, n_kv_head=2, n_embd=48, window_pattern="SSSL")
    cfg.update(model_config)
    g = torch.Generator().manual_seed(seed)
    L, H, KV, D, V = cfg["n_layer"], cfg["n_head"], cfg["n_kv_head"], cfg["n_embd"], cfg["vocab_size"]
    hd, rows = D // H, -(-cfg["vocab_size"] // 64) * 64

    def r(*shape, std=D**-0.5):
        return torch.randn(*shape, generator=g) * std

    sd = {"transformer.wte.weight": r(rows, D, std=1.0), "lm_head.weight": r(rows, D),
          "resid_lambdas": 1 + 0.2 * r(L, std=1.0), "x0_lambdas": 0.1 + 0.1 * r(L, std=1.0),
          "smear_gate.weight": r(1, 24, std=0.3), "smear_lambda": r(1, std=0.3), "backout_lambda": r(1, std=0.3)}
    for i in range(L):
        p = f"transformer.h.{i}."
        sd.update({p + "attn.c_q.weight": r(H * hd, D), p + "attn.c_k.weight": r(KV * hd, D),
                   p + "attn.c_v.weight": r(KV * hd, D), p + "attn.c_proj.weight": r(D, H * hd),
                   p + "mlp.c_fc.weight": r(4 * D, D), p + "mlp.c_proj.weight": r(D, 4 * D, std=(4 * D) ** -0.5)})
        if i % 2 == (L - 1) % 2:
            sd[p + "attn.ve_gate.weight"] = r(KV, 12, std=0.3)
            sd[f"value_embeds.{i}.weight"] = r(rows, KV * hd, std=1.0)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(sd, folder / f"model_{step:06d}.pt")
    (folder / f"meta_{step:06d}.json").write_text(json.dumps({"step": step, "model_config": cfg}))
    return sd, cfg


# ---------------------------------------------------------------------------------------------- golden parity


def test_reference_forward_reproduces_nanochat(golden_dir, golden):
    sd = torch.load(golden_dir / "model_000000.pt", weights_only=True)
    cfg = json.loads((golden_dir / "meta_000000.json").read_text())["model_config"]
    torch.testing.assert_close(reference_logits(sd, cfg, golden["input_ids"]), golden["logits"], rtol=0, atol=1e-4)


def test_logits_match_nanochat(golden_model, golden):
    with torch.no_grad():
        logits = golden_model(golden["input_ids"]).logits
    assert logits.dtype == torch.float32 and logits.shape == golden["logits"].shape
    torch.testing.assert_close(logits, golden["logits"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_continuation_matches_nanochat(golden_model, golden, use_cache):
    prompt = golden["greedy_prompt"][None]
    out = golden_model.generate(prompt, max_new_tokens=24, do_sample=False, use_cache=use_cache,
                                eos_token_id=None, pad_token_id=golden_model.config.pad_token_id)
    assert out[0, prompt.shape[1]:].tolist() == golden["greedy_continuation"].tolist()


def test_engine_greedy_matches_nanochat(golden_model, golden_tokenizer, golden):
    # the engine keeps its own DynamicCache (and so the smear state) and fans it out to 3 samples
    engine = Engine(golden_model, ChatTokens.from_tokenizer(golden_tokenizer))
    rows, _ = engine.generate_batch(golden["greedy_prompt"].tolist(), num_samples=3, max_tokens=24, temperature=0.0)
    assert rows == [golden["greedy_continuation"].tolist()] * 3  # (the continuation holds no stop token)


def test_tokenizer_ids_and_chat_rendering_match_nanochat(golden_dir, golden_tokenizer):
    gold = json.loads((golden_dir / "tokenizer_golden.json").read_text())
    tok = golden_tokenizer
    for backend in ("hf", "tiktoken"):  # nanochat's encode: text only, control-token strings stay text
        assert get_encoder(tok, backend)(gold["strings"]) == gold["ids"], backend
    assert [tok.bos_token_id, *get_encoder(tok, "hf")(gold["strings"][:1])[0]] == gold["bos_prepended"]
    assert {t: tok.convert_tokens_to_ids(t) for t in gold["special_tokens"]} == gold["special_tokens"]
    messages = gold["conversation"]["messages"]
    assert render_conversation(tok, messages) == (gold["conversation_ids"], gold["conversation_mask"])
    out = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert (out["input_ids"], out["assistant_masks"]) == (gold["conversation_ids"], gold["conversation_mask"])


def test_tokenizer_keeps_nanochat_split_pattern_and_merge_ranks(golden_dir, golden_tokenizer, repo_root):
    tiktoken = pytest.importorskip("tiktoken")
    state = read_tiktoken_pickle(golden_dir / "tokenizer" / "tokenizer.pkl")
    theirs = tiktoken.Encoding(name="nanochat", pat_str=state["pat_str"], mergeable_ranks=state["mergeable_ranks"],
                               special_tokens=state["special_tokens"])
    ours = tiktoken_encoding(golden_tokenizer)
    assert ours._pat_str == theirs._pat_str and ours._mergeable_ranks == theirs._mergeable_ranks
    # the tokenizers BPE built from the ranks splits real text exactly as nanochat's tiktoken does
    text = "".join(p.read_text() for p in sorted((repo_root / "hf_nanogpt").glob("*.py")))[:200_000]
    text += " naïve café 東京 🤖 12345678 \t\n\n"
    assert get_encoder(golden_tokenizer, "hf")([text]) == [theirs.encode_ordinary(text)]


def test_tokenizer_pickle_is_read_only_through_the_allow_list(tmp_path, golden_dir):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    bad = tmp_path / "tokenizer.pkl"
    bad.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(ValueError, match=r"refusing to unpickle posix\.system|refusing to unpickle nt\.system"):
        load_nanochat_tokenizer(tmp_path)
    with open(golden_dir / "tokenizer" / "tokenizer.pkl", "rb") as f:  # nanochat's file holds just the one class
        assert type(NanochatTokenizerUnpickler(f).load()).__name__ == "PickledEncoding"


# ---------------------------------------------------------------------------------------------- other shapes


@pytest.mark.parametrize("model_config", [
    dict(vocab_size=300),  # not a multiple of 64: padded rows, logits cropped
    dict(n_kv_head=1, window_pattern="SL", n_layer=4),  # MQA, another pattern, even depth
    dict(n_kv_head=4, window_pattern="L", n_layer=2),  # plain MHA, all layers full
    dict(window_pattern="SSL", n_layer=5, vocab_size=257),
])
def test_other_checkpoints_convert_with_the_reference_logits(tmp_path, model_config):
    sd, cfg = write_checkpoint(tmp_path / "ckpt", **model_config)
    model = NanoGPTForCausalLM.from_nanochat(tmp_path / "ckpt")
    ids = torch.randint(0, cfg["vocab_size"], (2, cfg["sequence_len"]), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape[-1] == cfg["vocab_size"]
    torch.testing.assert_close(logits, reference_logits(sd, cfg, ids), rtol=0, atol=1e-4)
    # decoding with the cache (smear state included) equals decoding without
    kw = dict(max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert torch.equal(model.generate(ids[:1, :140], **kw), model.generate(ids[:1, :140], use_cache=False, **kw))


def test_newest_step_is_the_default_and_step_selects(tmp_path):
    write_checkpoint(tmp_path, seed=0, step=100)
    sd_new, _ = write_checkpoint(tmp_path, seed=1, step=250)
    assert torch.equal(NanoGPTForCausalLM.from_nanochat(tmp_path).lm_head.weight, sd_new["lm_head.weight"])
    assert not torch.equal(NanoGPTForCausalLM.from_nanochat(tmp_path, step=100).lm_head.weight,
                           sd_new["lm_head.weight"])
    with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 7 \(it has steps \[100, 250\]\)"):
        NanoGPTForCausalLM.from_nanochat(tmp_path, step=7)


def _edit_checkpoint(folder, fn):
    path = folder / "model_000000.pt"
    sd = torch.load(path, weights_only=True)
    fn(sd)
    torch.save(sd, path)


@pytest.mark.parametrize("edit, error", [
    (lambda sd: sd.update({"transformer.h.0.attn.rope_scale": torch.ones(1)}),
     r"does not know, refused rather than dropped: \['transformer.h.0.attn.rope_scale'\]"),
    (lambda sd: sd.update({"mtp_heads.0.mlp.c_fc.weight": torch.ones(2, 2), "cos": torch.ones(1)}),
     r"2 weights this converter does not know.*\['cos', 'mtp_heads.0.mlp.c_fc.weight'\]"),
    (lambda sd: sd.pop("transformer.h.2.attn.ve_gate.weight"),
     r"missing \[.model.layers.2.self_attn.ve_gate.weight.\]"),
    (lambda sd: sd.update({"transformer.h.0.mlp.c_fc.weight": torch.ones(10, 48)}),
     r"model.layers.0.mlp.up_proj.weight: \(10, 48\) \(expected \(192, 48\)\)"),
])
def test_checkpoints_that_do_not_fit_are_refused_by_name(tmp_path, edit, error):
    write_checkpoint(tmp_path)
    _edit_checkpoint(tmp_path, edit)
    with pytest.raises(ValueError, match=error):
        NanoGPTForCausalLM.from_nanochat(tmp_path)


def test_unknown_config_fields_are_refused_by_name(tmp_path):
    write_checkpoint(tmp_path, mtp_n=2)
    with pytest.raises(ValueError, match=r"fields this converter does not know: \['mtp_n'\]"):
        NanoGPTForCausalLM.from_nanochat(tmp_path)


# ---------------------------------------------------------------------------------------------- the folder


@pytest.fixture(scope="module")
def converted(golden_dir, tmp_path_factory, repo_root):
    import importlib.util

    spec = importlib.util.spec_from_file_location("convert_script", repo_root / "scripts" / "convert_nanochat.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path_factory.mktemp("converted") / "d4"
    assert script.main([str(golden_dir), str(out)]) == out  # tokenizer found inside the checkpoint folder
    return out


def test_script_writes_a_complete_model_folder(converted, golden_dir, golden):
    names = {p.name for p in converted.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", "token_bytes.pt",
            "modeling_nanogpt.py", "blocks_nanogpt.py", "cache_nanogpt.py", "compat_nanogpt.py",
            "configuration_nanogpt.py"} <= names
    theirs = torch.load(golden_dir / "tokenizer" / "token_bytes.pt", weights_only=True)
    assert torch.equal(torch.load(converted / "token_bytes.pt", weights_only=True), theirs.long())
    model = AutoModelForCausalLM.from_pretrained(converted).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(golden["input_ids"]).logits, golden["logits"], rtol=0, atol=1e-4)
    tok = AutoTokenizer.from_pretrained(converted)
    assert tok.bos_token_id == model.config.bos_token_id == 503 and tok.eos_token_id == model.config.eos_token_id
    with pytest.raises(FileExistsError, match="exists and is not empty"):  # never writes over a folder
        convert_nanochat(golden_dir, converted)


def test_script_help(repo_root, capsys):
    main = runpy.run_path(str(repo_root / "scripts" / "convert_nanochat.py"), run_name="convert_nanochat")["main"]
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "python scripts/convert_nanochat.py" in capsys.readouterr().out


@pytest.mark.slow
def test_converted_folder_loads_in_a_fresh_process_without_the_package(converted, golden_dir, tmp_path):
    script = textwrap.dedent(f"""
        import json, sys, torch
        sys.modules["hf_nanogpt"] = None  # the classes must come from the folder's remote code
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM, AutoTokenizer
        g = load_file({str(golden_dir / "golden.safetensors")!r})
        gold = json.load(open({str(golden_dir / "tokenizer_golden.json")!r}))
        model = AutoModelForCausalLM.from_pretrained({str(converted)!r}, trust_remote_code=True).eval()
        assert "transformers_modules" in type(model).__module__
        with torch.no_grad():
            assert (model(g["input_ids"]).logits - g["logits"]).abs().max() < 1e-4
        out = model.generate(g["greedy_prompt"][None], max_new_tokens=24, do_sample=False, eos_token_id=None)
        assert out[0, 8:].tolist() == g["greedy_continuation"].tolist()
        tok = AutoTokenizer.from_pretrained({str(converted)!r})
        assert tok(gold["strings"][0])["input_ids"] == gold["ids"][0]
        chat = tok.apply_chat_template(gold["conversation"]["messages"], tokenize=True, return_dict=True,
                                       return_assistant_tokens_mask=True)
        assert chat["input_ids"] == gold["conversation_ids"] and chat["assistant_masks"] == gold["conversation_mask"]
        print("REMOTE_OK")
    """)
    env = {**os.environ, "PYTHONPATH": "", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "REMOTE_OK" in proc.stdout, proc.stderr[-3000:]
