"""From nanoGPT: checkpoints (golden logits from nanoGPT's own model.py), meta.pkl vocabularies, config files."""

import json
import os
import pickle
import runpy

import pytest
import torch
import torch.nn.functional as F

from hf_nanogpt.convert_nanogpt import char_tokenizer, convert, load_meta, load_nanogpt_checkpoint
from hf_nanogpt.convert_nanogpt_config import convert_nanogpt_config


@pytest.fixture(scope="module")
def golden(shared_data):
    from safetensors.torch import load_file

    folder = shared_data / "nanogpt_golden" / "random_bias"
    return folder, load_file(folder / "golden.safetensors")


def nanogpt_reference(sd: dict, args: dict, idx: torch.Tensor) -> torch.Tensor:
    """nanoGPT's forward written from its documented architecture (pre-LayerNorm GPT-2, eps 1e-5, exact
    GELU, fused q/k/v rows, head tied to wte); checked against nanoGPT's own logits below."""
    B, T = idx.shape
    d, nh = args["n_embd"], args["n_head"]

    def ln(x, p):
        return F.layer_norm(x, (d,), sd[p + ".weight"], sd.get(p + ".bias"), 1e-5)

    def lin(x, p):
        return F.linear(x, sd[p + ".weight"], sd.get(p + ".bias"))

    x = sd["transformer.wte.weight"][idx] + sd["transformer.wpe.weight"][:T]
    for i in range(args["n_layer"]):
        p = f"transformer.h.{i}."
        q, k, v = lin(ln(x, p + "ln_1"), p + "attn.c_attn").split(d, dim=2)
        q, k, v = (t.view(B, T, nh, d // nh).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, d)
        x = x + lin(y, p + "attn.c_proj")
        x = x + lin(F.gelu(lin(ln(x, p + "ln_2"), p + "mlp.c_fc")), p + "mlp.c_proj")
    return F.linear(ln(x, "transformer.ln_f"), sd["transformer.wte.weight"])


def random_nanogpt_state(args: dict, seed: int = 0) -> dict:
    """A state dict in nanoGPT's layout (norm weights and biases perturbed so they matter)."""
    g = torch.Generator().manual_seed(seed)
    d, V, T = args["n_embd"], args["vocab_size"], args["block_size"]

    def r(*shape, scale=0.1, center=0.0):
        return center + scale * torch.randn(*shape, generator=g)

    sd = {"transformer.wte.weight": r(V, d, scale=0.5), "transformer.wpe.weight": r(T, d)}
    for i in range(args["n_layer"]):
        p = f"transformer.h.{i}."
        for name, (o, n) in {"attn.c_attn": (3 * d, d), "attn.c_proj": (d, d), "mlp.c_fc": (4 * d, d),
                             "mlp.c_proj": (d, 4 * d)}.items():
            sd[p + name + ".weight"] = r(o, n, scale=n ** -0.5)
            if args["bias"]:
                sd[p + name + ".bias"] = r(o)
        for name in ("ln_1", "ln_2"):
            sd[p + name + ".weight"] = r(d, center=1.0)
            if args["bias"]:
                sd[p + name + ".bias"] = r(d)
    sd["transformer.ln_f.weight"] = r(d, center=1.0)
    if args["bias"]:
        sd["transformer.ln_f.bias"] = r(d)
    sd["lm_head.weight"] = sd["transformer.wte.weight"]  # tied, as nanoGPT saves it
    return sd


def save_ckpt(path, state, args):
    path.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state, "model_args": args, "iter_num": 5, "best_val_loss": torch.tensor(1.5),
                "config": {"dataset": "test"}}, path / "ckpt.pt")
    return path


def load_converted(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).eval()


def test_golden_checkpoint_gives_nanogpts_logits(golden, tmp_path):
    folder, ref = golden
    record = convert(folder, tmp_path / "hf")
    model = load_converted(tmp_path / "hf")
    with torch.no_grad():
        logits = model(ref["input_ids"]).logits
    assert logits.shape == ref["logits"].shape == (2, 128, 96)
    torch.testing.assert_close(logits, ref["logits"], atol=2e-6, rtol=1e-5)
    # the independent reference used for the variants below agrees with nanoGPT too
    ckpt = load_nanogpt_checkpoint(folder)
    torch.testing.assert_close(nanogpt_reference(ckpt["model"], ckpt["model_args"], ref["input_ids"]), ref["logits"],
                               atol=2e-6, rtol=1e-5)
    cfg = model.config
    assert (cfg.hidden_act, cfg.norm_eps, cfg.bias, cfg.tie_word_embeddings) == ("gelu", 1e-5, True, True)
    assert record["vocab_size"] == 96 and "tokenizer" in record and record["iter_num"] == 0
    saved = json.loads((tmp_path / "hf" / "convert_nanogpt.json").read_text())
    assert saved["model_args"]["n_layer"] == 2


@pytest.mark.parametrize("bias,compiled", [(False, True), (True, False)])
def test_variants_bias_compiled_keys_and_other_sizes(tmp_path, bias, compiled):
    args = dict(n_layer=3, n_head=2, n_embd=48, block_size=32, bias=bias, vocab_size=50, dropout=0.1)
    state = random_nanogpt_state(args)
    if not bias:  # nanoGPT without flash attention also saves its causal-mask buffer
        for i in range(3):
            state[f"transformer.h.{i}.attn.bias"] = torch.ones(32, 32).tril().view(1, 1, 32, 32)
    saved = {("_orig_mod." + k if compiled else k): v for k, v in state.items()}
    convert(save_ckpt(tmp_path / "ckpt", saved, args), tmp_path / "hf")
    model = load_converted(tmp_path / "hf")
    idx = torch.randint(0, 50, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(idx).logits, nanogpt_reference(state, args, idx), atol=2e-5, rtol=1e-4)
    assert model.config.bias is bias and model.config.dropout == 0.1
    assert not any(n.endswith(".bias") for n, _ in model.named_parameters()) or bias


def test_bad_checkpoints_are_refused_by_name(tmp_path):
    args = dict(n_layer=1, n_head=2, n_embd=16, block_size=8, bias=False, vocab_size=10)
    state = random_nanogpt_state(args)
    with pytest.raises(ValueError, match=r"keys this converter does not know: \['transformer.h.0.attn.rope'\]"):
        convert(save_ckpt(tmp_path / "a", {**state, "transformer.h.0.attn.rope": torch.zeros(2)}, args), tmp_path / "o")
    with pytest.raises(ValueError, match="lacks 'transformer.h.0.mlp.c_fc.weight'"):
        convert(save_ckpt(tmp_path / "b", {k: v for k, v in state.items() if "c_fc" not in k}, args), tmp_path / "o")
    with pytest.raises(ValueError, match=r"'transformer.wpe.weight' has shape \(4, 16\), expected \(8, 16\)"):
        convert(save_ckpt(tmp_path / "c", {**state, "transformer.wpe.weight": torch.zeros(4, 16)}, args), tmp_path / "o")
    with pytest.raises(ValueError, match=r"model_args lacks \['bias'\]"):
        convert(save_ckpt(tmp_path / "d", state, {k: v for k, v in args.items() if k != "bias"}), tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="checkpoint .*nowhere does not exist"):
        convert(tmp_path / "nowhere", tmp_path / "o")
    torch.save({"model": state, "model_args": args, "extra": os.getcwd}, tmp_path / "evil.pt")  # a function inside
    with pytest.raises(ValueError, match="weights_only load refused it"):
        convert(tmp_path / "evil.pt", tmp_path / "o")
    assert not (tmp_path / "o").exists()  # nothing written for a refused checkpoint


SHAKESPEARE_LINE = "First Citizen:\nBefore we proceed any further, hear me speak.\n"


def write_meta(path, text):
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    with open(path, "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": {i: c for c, i in stoi.items()}, "stoi": stoi}, f)
    return stoi


def test_meta_pkl_becomes_a_tokenizer_with_nanogpts_ids(shared_data, tmp_path):
    from hf_nanogpt.tokenization import get_encoder, render_for_completion, token_bytes

    text = (shared_data / "corpus" / "tinyshakespeare.txt").read_text()
    stoi = write_meta(tmp_path / "meta.pkl", text + "é中")  # 65 ASCII characters plus two multi-byte ones
    tok = char_tokenizer(load_meta(tmp_path / "meta.pkl")["stoi"])
    sample = text[:2000] + "é中"
    expected = [stoi[c] for c in sample]  # nanoGPT's encode
    assert tok(sample)["input_ids"] == expected
    assert get_encoder(tok, "tiktoken")([sample]) == [expected] == get_encoder(tok, "hf")([sample])
    assert tok.decode(expected) == sample
    sizes = token_bytes(tok)
    assert [int(sizes[stoi[c]]) for c in "aé中"] == [1, 2, 3]
    # a character nanoGPT never saw is not dropped: it becomes its bytes (new ids past the characters)
    unseen = tok("ü")["input_ids"]
    assert len(unseen) == 2 and min(unseen) >= len(stoi) and tok.decode(unseen) == "ü"
    # the chat format works: control tokens come last
    ids = render_for_completion(tok, [{"role": "user", "content": "Hi"}])
    assert ids[0] == tok.bos_token_id >= len(stoi) and ids[-1] == tok.convert_tokens_to_ids("<|assistant_start|>")


def test_meta_with_the_golden_model_keeps_logits_and_grows_the_vocabulary(golden, tmp_path):
    from transformers import AutoTokenizer

    folder, ref = golden
    chars = "".join(chr(c) for c in range(32, 127)) + "\n"  # 96 characters for the 96-row model
    write_meta(tmp_path / "meta.pkl", chars)
    record = convert(folder, tmp_path / "hf", meta_path=tmp_path / "meta.pkl")
    model, tok = load_converted(tmp_path / "hf"), AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert model.config.vocab_size == len(tok) == record["vocab_size"] > 96
    assert model.config.bos_token_id == tok.bos_token_id and record["characters"] == 96
    with torch.no_grad():
        logits = model(ref["input_ids"]).logits
    torch.testing.assert_close(logits[..., :96], ref["logits"], atol=2e-6, rtol=1e-5)  # nanoGPT's ids unchanged
    emb = model.get_input_embeddings().weight
    torch.testing.assert_close(emb[96:], emb[:96].mean(0).expand(len(tok) - 96, -1))  # new rows: the mean


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/h4_meta_pwned",))


def test_meta_unpickler_allows_only_dicts_strings_and_ints(tmp_path):
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"stoi": {"a": 0}, "itos": {0: "a"}, "x": _Evil()}, f)
    with pytest.raises(ValueError, match=r"refers to posix.system; only dicts, strings and ints"):
        load_meta(tmp_path / "evil.pkl")
    assert not os.path.exists("/tmp/h4_meta_pwned")
    with open(tmp_path / "float.pkl", "wb") as f:
        pickle.dump({"stoi": {"a": 0}, "itos": {0: "a"}, "vocab_size": 1.0}, f)
    with pytest.raises(ValueError, match=r"meta\['vocab_size'\] is a float"):
        load_meta(tmp_path / "float.pkl")
    with open(tmp_path / "gap.pkl", "wb") as f:
        pickle.dump({"stoi": {"a": 0, "b": 2}, "itos": {0: "a", 2: "b"}}, f)
    with pytest.raises(ValueError, match="stoi ids must be 0..1"):
        load_meta(tmp_path / "gap.pkl")


NANOGPT_CONFIG = '''\
# a character-level run, nanoGPT style
out_dir = 'out-char'
eval_interval = 100
eval_iters = 20
wandb_run_name = 'char-' + str(7)
dataset = 'shakespeare_char'
gradient_accumulation_steps = 2
batch_size = 16
block_size = 128
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.2
learning_rate = 1e-3
max_iters = 400
lr_decay_iters = 400
min_lr = 1e-4
beta2 = 0.99
warmup_iters = 40
device = 'cpu'
import os
os.system('touch /tmp/h4_config_pwned')
'''


def test_nanogpt_config_becomes_a_valid_recipe(tmp_path, repo_root, capsys):
    from hf_nanogpt.recipe import parse_recipe
    from hf_nanogpt.training import build_model_config

    (tmp_path / "train_char.py").write_text(NANOGPT_CONFIG)
    main = runpy.run_path(str(repo_root / "scripts" / "convert_nanogpt_config.py"))["main"]
    text = main([str(tmp_path / "train_char.py")])
    captured = capsys.readouterr()
    assert not os.path.exists("/tmp/h4_config_pwned")  # never executed
    (tmp_path / "r.yaml").write_text(text)
    recipe = parse_recipe([str(tmp_path / "r.yaml")])  # loads and validates as any recipe
    assert (recipe.depth, recipe.max_seq_len, recipe.device_batch_size, recipe.num_iterations) == (4, 128, 16, 400)
    assert recipe.total_batch_size == 2 * 16 * 128 and recipe.eval_tokens == 20 * 16 * 128
    assert recipe.eval_every == 100 and recipe.output_dir == "out-char/base" and recipe.warmup_steps == 40
    assert recipe.final_lr_frac == pytest.approx(0.1) and recipe.lr_schedule == "cosine"
    assert recipe.weight_decay == 0.1 and recipe.weight_decay_schedule == "constant"
    assert "beta1=0.9, beta2=0.99: the AdamW betas are fixed per parameter group" in text  # not a recipe key
    assert recipe.model_config == {"dropout": 0.2, "bias": False, "hidden_act": "gelu"}  # bias: nanoGPT's default
    assert recipe.train_data.endswith("tinyshakespeare.txt[:90%]") and recipe.dtype == "auto"
    # the effective AdamW rate of the embedding is nanoGPT's learning_rate
    assert recipe.embedding_lr * (128 / 768) ** -0.5 == pytest.approx(1e-3)

    class Vocab:
        bos_token_id = eos_token_id = pad_token_id = 256

        def __len__(self):
            return 265

    config = build_model_config(recipe, Vocab())
    assert (config.hidden_size, config.num_attention_heads, config.max_position_embeddings) == (128, 4, 128)
    assert (config.position_embedding, config.tie_word_embeddings, config.bias) == ("learned", True, False)
    # what could not be mapped is listed, in the YAML and on stderr
    assert "wandb_run_name = 'char-' + str(7) (not a literal" in text and "import os (not a top-level" in text
    assert "device = 'cpu'" in captured.err and "--vocab_size 265" in text


def test_config_widths_that_are_not_a_whole_aspect_ratio_go_to_the_model():
    converted = convert_nanogpt_config("n_layer = 24\nn_head = 16\nn_embd = 1024\n")  # GPT-2 medium
    r = converted.recipe
    assert r["model_config"]["hidden_size"] == 1024 and r["head_dim"] == 64 and "aspect_ratio" not in r
    assert r["max_seq_len"] == 1024 and r["total_batch_size"] == 40 * 12 * 1024  # nanoGPT's defaults
    with pytest.raises(ValueError, match=r"config:2: not valid Python"):
        convert_nanogpt_config("x = 1\ny = (\n")


def test_scripts_help_and_errors(repo_root, tmp_path, capsys):
    for name in ("convert_nanogpt", "convert_nanogpt_config"):
        main = runpy.run_path(str(repo_root / "scripts" / f"{name}.py"))["main"]
        with pytest.raises(SystemExit) as info:
            main(["--help"])
        assert info.value.code == 0 and f"python scripts/{name}.py" in capsys.readouterr().out
    convert_main = runpy.run_path(str(repo_root / "scripts" / "convert_nanogpt.py"))["main"]
    with pytest.raises(SystemExit, match="convert_nanogpt: nanoGPT checkpoint .* does not exist"):
        convert_main([str(tmp_path / "none"), str(tmp_path / "out")])
    (tmp_path / "meta.pkl").write_bytes(b"not a pickle")
    args = dict(n_layer=1, n_head=2, n_embd=16, block_size=8, bias=False, vocab_size=10)
    save_ckpt(tmp_path / "ckpt", random_nanogpt_state(args), args)
    with pytest.raises(SystemExit, match="convert_nanogpt: .*meta.pkl"):
        convert_main([str(tmp_path / "ckpt"), str(tmp_path / "out"), "--meta", str(tmp_path / "meta.pkl")])
