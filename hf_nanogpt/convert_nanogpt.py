"""From nanoGPT: a `ckpt.pt` checkpoint (and a character-level `meta.pkl`) -> a Hugging Face model folder.

    python scripts/convert_nanogpt.py out-shakespeare-char/ out/shakespeare-char \\
        --meta data/shakespeare_char/meta.pkl
    python scripts/convert_nanogpt.py out/ckpt.pt out/gpt2-owt          # a BPE checkpoint: model only

The checkpoint. nanoGPT's `train.py` saves a dict with `model` (the state dict), `model_args`
(`n_layer, n_head, n_embd, block_size, bias, vocab_size, dropout`), `iter_num`, `best_val_loss` and
`config`. It is read with `torch.load(weights_only=True)`: tensors and plain containers only, no code.
Its layout maps onto `NanoGPTConfig.gpt2()` with these details checked one by one:

| nanoGPT                                   | here                                              |
|-------------------------------------------|---------------------------------------------------|
| `transformer.wte` (V, d), `lm_head` tied  | `model.embed_tokens`, `tie_word_embeddings=True`   |
| `transformer.wpe` (block_size, d)         | `model.embed_positions` (learned positions)       |
| `h.i.ln_1` / `ln_2` / `ln_f`, eps 1e-5    | `input_layernorm` / `post_attention_layernorm` / `norm`, `norm_eps=1e-5` |
| `bias=False`: no LayerNorm or Linear bias | `bias=False` (both, as nanoGPT)                   |
| `h.i.attn.c_attn` (3d, d): q, k, v rows   | `self_attn.q_proj`, `k_proj`, `v_proj` (d, d) each |
| `h.i.attn.c_proj`, `mlp.c_fc`, `mlp.c_proj` | `o_proj`, `up_proj`, `down_proj` (`nn.Linear` layout in both) |
| exact (erf) GELU                          | `hidden_act="gelu"` (the GPT-2 preset's is tanh)  |
| `h.i.attn.bias` (old causal-mask buffer)  | dropped after checking it is the causal mask      |

A `torch.compile`d model's checkpoint prefixes every key with `_orig_mod.`; the prefix is removed.
Unknown keys are refused by name; missing ones too. The logits equal nanoGPT's own (tested against
`../shared/data/nanogpt_golden`, which nanoGPT's `model.py` computed).

The vocabulary. A character-level run keeps `stoi`/`itos` in `data/<dataset>/meta.pkl`, a pickle. It
is read by an allow-list unpickler that constructs no object at all (`find_class` refuses every
global), and the result must be dicts of strings and ints only. `char_tokenizer` turns it into this
package's byte-level BPE format with the *same ids*: character `c` is token `stoi[c]` (a multi-byte
UTF-8 character is a merge of its bytes), then every byte that is not a character of the vocabulary
and the intermediate merges get the next ids, then nanochat's nine control tokens (`<|bos|>`, the
chat roles, the calculator tool). So any text encodes (nanoGPT raises `KeyError` on a character it
has not seen; here it becomes raw bytes), the data pipeline (tiktoken, bits per byte) works, and the
chat template and tool tokens are there. The model's vocabulary grows to cover the new ids: their
embedding rows start at the mean of the trained rows (Hewitt 2021, "Initializing new word
embeddings"), so the logits of the original ids are unchanged and the new ones start as an average
token. The model has never seen `<|bos|>` or the chat tokens: `scripts/sft.py` teaches the format.
"""

import json
import pickle
from pathlib import Path

import torch

from .configuration_nanogpt import NanoGPTConfig
from .modeling_nanogpt import NanoGPTForCausalLM

MODEL_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size")
COMPILED_PREFIX = "_orig_mod."
# nanoGPT name (inside transformer.h.{i}.) -> ours (inside model.layers.{i}.), c_attn handled apart
_LAYER_NAMES = {"ln_1": "input_layernorm", "ln_2": "post_attention_layernorm", "attn.c_proj": "self_attn.o_proj",
                "mlp.c_fc": "mlp.up_proj", "mlp.c_proj": "mlp.down_proj"}


# ----------------------------------------------------------------------------- checkpoint


def load_nanogpt_checkpoint(path) -> dict:
    """A nanoGPT checkpoint: `path` is a `ckpt.pt` file or a folder holding one (nanoGPT's `out_dir`)."""
    path = Path(path)
    if path.is_dir():
        path = path / "ckpt.pt"
    if not path.is_file():
        raise FileNotFoundError(f"nanoGPT checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only refused something: say what, never retry unsafely
        raise ValueError(f"{path}: not a plain nanoGPT checkpoint (weights_only load refused it: {err})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path}: expected nanoGPT's checkpoint dict with 'model' and 'model_args', got {keys}")
    missing = [k for k in MODEL_ARGS if k not in ckpt["model_args"]]
    if missing:
        raise ValueError(f"{path}: model_args lacks {missing} (has {sorted(ckpt['model_args'])})")
    ckpt["path"] = str(path)
    return ckpt


def nanogpt_config(model_args: dict, tie_word_embeddings: bool = True, **overrides) -> NanoGPTConfig:
    """The `NanoGPTConfig` of nanoGPT's `GPTConfig(**model_args)`."""
    n_embd, n_head = model_args["n_embd"], model_args["n_head"]
    if n_embd % n_head:
        raise ValueError(f"model_args n_embd={n_embd} is not divisible by n_head={n_head}")
    fields = dict(vocab_size=model_args["vocab_size"], hidden_size=n_embd, num_hidden_layers=model_args["n_layer"],
                  num_attention_heads=n_head, max_position_embeddings=model_args["block_size"],
                  intermediate_size=4 * n_embd, bias=bool(model_args["bias"]), dropout=float(model_args.get("dropout", 0.0)),
                  hidden_act="gelu", norm_eps=1e-5, tie_word_embeddings=tie_word_embeddings)
    fields.update(overrides)
    return NanoGPTConfig.gpt2(**fields)


def _strip_compiled_prefix(state: dict) -> dict:
    if any(k.startswith(COMPILED_PREFIX) for k in state):
        return {k.removeprefix(COMPILED_PREFIX): v for k, v in state.items()}
    return state


def convert_state_dict(nano_state: dict, config: NanoGPTConfig) -> dict:
    """nanoGPT state dict -> ours, every name mapped explicitly; unknown or missing keys raise by name."""
    src = _strip_compiled_prefix(dict(nano_state))
    d, L = config.hidden_size, config.num_hidden_layers
    out, used = {}, set()

    def take(name: str, shape: tuple) -> torch.Tensor:
        if name not in src:
            raise ValueError(f"nanoGPT checkpoint lacks {name!r} (expected for n_layer={L}, bias={config.bias})")
        t = src[name]
        if tuple(t.shape) != shape:
            raise ValueError(f"nanoGPT checkpoint {name!r} has shape {tuple(t.shape)}, expected {shape}")
        used.add(name)
        return t

    out["model.embed_tokens.weight"] = take("transformer.wte.weight", (config.vocab_size, d))
    out["model.embed_positions.weight"] = take("transformer.wpe.weight", (config.max_position_embeddings, d))
    for i in range(L):
        p, q = f"transformer.h.{i}.", f"model.layers.{i}."
        qkv = take(p + "attn.c_attn.weight", (3 * d, d))  # rows: q | k | v, each (d, d), heads contiguous
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            out[q + f"self_attn.{name}.weight"] = qkv[j * d:(j + 1) * d]
        if config.bias:
            qkv_b = take(p + "attn.c_attn.bias", (3 * d,))
            for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
                out[q + f"self_attn.{name}.bias"] = qkv_b[j * d:(j + 1) * d]
        shapes = {"ln_1": (d,), "ln_2": (d,), "attn.c_proj": (d, d), "mlp.c_fc": (4 * d, d), "mlp.c_proj": (d, 4 * d)}
        for a, b in _LAYER_NAMES.items():
            out[q + b + ".weight"] = take(p + a + ".weight", shapes[a])
            if config.bias:
                out[q + b + ".bias"] = take(p + a + ".bias", (shapes[a][0],))
        mask = src.get(p + "attn.bias")  # nanoGPT without flash attention registers its causal mask
        if mask is not None:
            T = config.max_position_embeddings
            if tuple(mask.shape) != (1, 1, T, T) or not torch.equal(mask, torch.ones(T, T).tril().view(1, 1, T, T)):
                raise ValueError(f"nanoGPT checkpoint {p + 'attn.bias'!r} is not the causal mask buffer")
            used.add(p + "attn.bias")
    out["model.norm.weight"] = take("transformer.ln_f.weight", (d,))
    if config.bias:
        out["model.norm.bias"] = take("transformer.ln_f.bias", (d,))
    if "lm_head.weight" in src:
        head = take("lm_head.weight", (config.vocab_size, d))
        if not config.tie_word_embeddings:
            out["lm_head.weight"] = head
        elif not torch.equal(head, out["model.embed_tokens.weight"]):
            raise ValueError("nanoGPT checkpoint: lm_head.weight differs from transformer.wte.weight, but the "
                             "config ties them (convert with tie_word_embeddings=False)")
    unknown = sorted(set(src) - used)
    if unknown:
        raise ValueError(f"nanoGPT checkpoint has keys this converter does not know: {unknown}")
    return {k: v.contiguous() for k, v in out.items()}


def convert_checkpoint(ckpt: dict) -> NanoGPTForCausalLM:
    """A `NanoGPTForCausalLM` with nanoGPT's weights (eval mode, the checkpoint's dtype)."""
    state = _strip_compiled_prefix(ckpt["model"])
    tied = "lm_head.weight" not in state or torch.equal(state["lm_head.weight"], state["transformer.wte.weight"])
    config = nanogpt_config(ckpt["model_args"], tie_word_embeddings=tied)
    weights = convert_state_dict(state, config)
    dtype = weights["model.embed_tokens.weight"].dtype
    with torch.device("meta"):  # no random init: every tensor comes from the checkpoint
        model = NanoGPTForCausalLM(config)
    model.load_state_dict(weights, strict=False, assign=True)
    model.tie_weights()
    leftover = [n for n, p in model.named_parameters() if p.is_meta]
    if leftover:
        raise RuntimeError(f"convert_nanogpt: parameters not filled from the checkpoint: {leftover}")
    return model.to(dtype).eval()


# ----------------------------------------------------------------------------- meta.pkl


class _NoGlobalsUnpickler(pickle.Unpickler):
    """An allow-list unpickler whose list of classes is empty: dicts, strings and ints are pickle opcodes,
    not globals, so a real meta.pkl needs none, and anything that names a class or function is refused."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"meta.pkl refers to {module}.{name}; only dicts, strings and ints are allowed")


def _check_plain(value, where: str = "meta") -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(k, f"{where} key")
            _check_plain(v, f"{where}[{k!r}]")
    elif not isinstance(value, (str, int)) or isinstance(value, bool):
        raise ValueError(f"meta.pkl: {where} is a {type(value).__name__}; only dicts, strings and ints are allowed")


def load_meta(path) -> dict:
    """nanoGPT's character-level `meta.pkl` (`vocab_size`, `stoi`, `itos`), checked to be consistent."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"meta.pkl {path} does not exist")
    try:
        with open(path, "rb") as f:
            meta = _NoGlobalsUnpickler(f).load()
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: {err}") from None
    except Exception as err:  # a truncated or garbled file: say which, whatever the unpickler tripped on
        raise ValueError(f"{path}: not a readable meta.pkl ({type(err).__name__}: {err})") from None
    _check_plain(meta)
    if not isinstance(meta, dict) or not {"stoi", "itos"} <= set(meta):
        raise ValueError(f"{path}: expected a dict with 'stoi' and 'itos', got keys {sorted(meta) if isinstance(meta, dict) else meta}")
    stoi, itos = meta["stoi"], meta["itos"]
    if not all(isinstance(c, str) and len(c) == 1 and isinstance(i, int) for c, i in stoi.items()):
        raise ValueError(f"{path}: stoi must map single characters to ints")
    if sorted(stoi.values()) != list(range(len(stoi))):
        raise ValueError(f"{path}: stoi ids must be 0..{len(stoi) - 1}, each once")
    if {i: c for c, i in stoi.items()} != itos:
        raise ValueError(f"{path}: itos is not the inverse of stoi")
    if meta.get("vocab_size", len(stoi)) != len(stoi):
        raise ValueError(f"{path}: vocab_size={meta['vocab_size']} but stoi has {len(stoi)} characters")
    return meta


def char_tokenizer(stoi: dict[str, int]):
    """A byte-level BPE tokenizer (this package's format, control tokens included) whose ids for the
    characters of `stoi` are `stoi`'s; see the module docstring for the ids that follow."""
    from tokenizers import AddedToken, Tokenizer, models
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from .tokenization import SPECIAL_TOKENS, tokenizer_from_backend, train_tokenizer

    b2u = bytes_to_unicode()  # byte -> the printable character byte-level BPE writes it as
    vocab = {"".join(b2u[b] for b in c.encode("utf-8")): i for c, i in stoi.items()}
    merges = []

    def add(token: str) -> None:
        if token not in vocab:
            vocab[token] = len(vocab)

    for b in range(256):  # every byte is a token, so no text is ever dropped
        add(b2u[b])
    for c in sorted(stoi, key=stoi.get):
        data = [b2u[b] for b in c.encode("utf-8")]
        for k in range(2, len(data) + 1):  # a multi-byte character: merge its bytes left to right
            add("".join(data[:k]))
            merges.append(("".join(data[:k - 1]), data[k - 1]))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    # The normaliser, split pattern and byte mapping of this package's tokenizers, taken from a stock one
    # (trained on one character: no merges) so the two formats cannot drift apart.
    stock = train_tokenizer(["a"], vocab_size=256 + len(SPECIAL_TOKENS)).backend_tokenizer
    backend.normalizer, backend.pre_tokenizer, backend.decoder = stock.normalizer, stock.pre_tokenizer, stock.decoder
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tokenizer_from_backend(backend)


@torch.no_grad()
def grow_vocabulary(model: NanoGPTForCausalLM, vocab_size: int) -> None:
    """Add embedding (and untied head) rows up to `vocab_size`, initialised at the mean of the old rows."""
    old = model.config.vocab_size
    if vocab_size <= old:
        return
    mean = model.get_input_embeddings().weight.mean(dim=0)  # (d,)
    model.resize_token_embeddings(vocab_size, mean_resizing=False)
    model.get_input_embeddings().weight[old:] = mean
    if not model.config.tie_word_embeddings:
        head = model.get_output_embeddings().weight
        head[old:] = head[:old].mean(dim=0)


# ----------------------------------------------------------------------------- the whole conversion


def convert(ckpt_path, output_dir, meta_path=None) -> dict:
    """Convert a nanoGPT checkpoint (and optionally its `meta.pkl`) into a model folder; returns the record
    written to `<output_dir>/convert_nanogpt.json`."""
    from .checkpointing import save_model_folder

    ckpt = load_nanogpt_checkpoint(ckpt_path)
    model = convert_checkpoint(ckpt)
    args = ckpt["model_args"]
    record = {"source": ckpt["path"], "model_args": args, "iter_num": ckpt.get("iter_num"),
              "best_val_loss": float(ckpt["best_val_loss"]) if "best_val_loss" in ckpt else None,
              "nanogpt_vocab_size": args["vocab_size"]}
    tokenizer = None
    if meta_path is not None:
        meta = load_meta(meta_path)
        if len(meta["stoi"]) > args["vocab_size"]:
            raise ValueError(f"{meta_path}: {len(meta['stoi'])} characters, but the model has only "
                             f"vocab_size={args['vocab_size']} rows")
        tokenizer = char_tokenizer(meta["stoi"])
        grow_vocabulary(model, len(tokenizer))
        model.config.update(dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id))
        record.update(meta=str(meta_path), characters=len(meta["stoi"]), tokenizer_size=len(tokenizer),
                      new_ids=f"{args['vocab_size']}..{model.config.vocab_size - 1} (bytes outside the character "
                              "set, multi-byte merges, control tokens): mean-initialised, untrained")
    else:
        record["tokenizer"] = ("none: pass --meta data/<dataset>/meta.pkl for a character-level run; a GPT-2 BPE "
                               "run needs the GPT-2 tokenizer (tiktoken 'gpt2'), which is not converted here")
    record["vocab_size"] = model.config.vocab_size
    output_dir = Path(output_dir)
    save_model_folder(output_dir, model, tokenizer)
    (output_dir / "convert_nanogpt.json").write_text(json.dumps(record, indent=2))
    return record


__all__ = ["char_tokenizer", "convert", "convert_checkpoint", "convert_state_dict", "grow_vocabulary",
           "load_meta", "load_nanogpt_checkpoint", "nanogpt_config"]
