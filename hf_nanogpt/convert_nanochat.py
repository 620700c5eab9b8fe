"""Import nanochat checkpoints (weights, config and tokenizer) as a Hugging Face model folder.

nanochat's own layout, as its `save_checkpoint` writes it:

    $NANOCHAT_BASE_DIR/tokenizer/tokenizer.pkl     a pickled tiktoken `Encoding` (rustbpe-trained)
    $NANOCHAT_BASE_DIR/tokenizer/token_bytes.pt    bytes per token id, 0 for the special tokens
    $NANOCHAT_BASE_DIR/base_checkpoints/d20/model_005000.pt   the state dict (`torch.save`)
    $NANOCHAT_BASE_DIR/base_checkpoints/d20/meta_005000.json  `step`, `model_config` (GPTConfig fields), ...

What is read, and how:
- weights with `torch.load(weights_only=True)` (no code runs); every name is mapped by the explicit
  table `_NAME_RULES`; a name the table does not know, a weight our model expects but the file lacks, or a
  shape that disagrees is refused with the names (never dropped silently);
- `meta_*.json`'s `model_config`: the known `GPTConfig` fields only, anything else is refused by name;
- the tokenizer pickle only through `NanochatTokenizerUnpickler`, an allow-list `pickle.Unpickler` that
  resolves exactly one global, `tiktoken.core.Encoding`, to a plain record of its constructor arguments
  (split pattern, merge ranks, special tokens): no tiktoken code runs, and tiktoken need not be installed.
  transformers' `TikTokenConverter` turns the ranks into a `tokenizers` BPE with the same ids; our
  normalizer, control-token roles and chat template go on top (`tokenization.tokenizer_from_backend`).

Layouts: nanochat master (92d63d4, 2026-07; smear, value embeddings, backout, rotary base 100000, QK
scale 1.2, windows of ceil(T/4/128)*128 tokens) is recognised by its smear/value-embedding/backout
weights and proven against nanochat's own logits (`tests/test_convert_nanochat.py`). A state dict without
them is read as the January-2026 layout (rotary base 10000, no QK scale, "S" windows of T // 2 tokens);
`config_overrides` correct anything a checkpoint of another nanochat version did differently.

The result is a normal model folder (`convert_nanochat`): `save_pretrained` weights and config with the
remote code, the tokenizer (same ids, our chat template), `token_bytes.pt`; it loads with
`AutoModelForCausalLM` / `AutoTokenizer` on a machine without this package.
"""

import json
import os
import pickle
import re
import shutil
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter

from .configuration_nanogpt import TORCH_FLOAT32_EPS, NanoGPTConfig
from .modeling_nanogpt import NanoGPTForCausalLM
from .tokenization import SPECIAL_TOKENS, token_bytes, tokenizer_from_backend, unescape_normalizer

# nanochat GPTConfig field -> NanoGPTConfig field (window_pattern is handled on its own).
_META_FIELDS = {"sequence_len": "max_position_embeddings", "vocab_size": "vocab_size", "n_layer": "num_hidden_layers",
                "n_head": "num_attention_heads", "n_kv_head": "num_key_value_heads", "n_embd": "hidden_size"}

# nanochat state-dict name (regex) -> our name. Every weight of both models is listed here.
_NAME_RULES = [
    (r"transformer\.wte\.weight", "model.embed_tokens.weight"),
    (r"transformer\.h\.(\d+)\.attn\.c_q\.weight", r"model.layers.\1.self_attn.q_proj.weight"),
    (r"transformer\.h\.(\d+)\.attn\.c_k\.weight", r"model.layers.\1.self_attn.k_proj.weight"),
    (r"transformer\.h\.(\d+)\.attn\.c_v\.weight", r"model.layers.\1.self_attn.v_proj.weight"),
    (r"transformer\.h\.(\d+)\.attn\.c_proj\.weight", r"model.layers.\1.self_attn.o_proj.weight"),
    (r"transformer\.h\.(\d+)\.attn\.ve_gate\.weight", r"model.layers.\1.self_attn.ve_gate.weight"),
    (r"transformer\.h\.(\d+)\.mlp\.c_fc\.weight", r"model.layers.\1.mlp.up_proj.weight"),
    (r"transformer\.h\.(\d+)\.mlp\.c_proj\.weight", r"model.layers.\1.mlp.down_proj.weight"),
    (r"value_embeds\.(\d+)\.weight", r"model.value_embeds.\1.weight"),
    (r"lm_head\.weight", "lm_head.weight"),
    (r"resid_lambdas", "model.resid_lambdas"),
    (r"x0_lambdas", "model.x0_lambdas"),
    (r"smear_gate\.weight", "model.smear_gate.weight"),
    (r"smear_lambda", "model.smear_lambda"),
    (r"backout_lambda", "model.backout_lambda"),
]
_COMPILED_PREFIX = "_orig_mod."  # a state dict saved from a torch.compile'd model (nanochat strips it too)


# ----------------------------------------------------------------------------------------------------
# Checkpoint files


def find_step(checkpoint_dir: str | os.PathLike, step: int | None = None) -> int:
    """The step to read: `step` if its `model_*.pt` exists, else (step=None) the newest one."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"nanochat checkpoint folder {folder} does not exist")
    steps = sorted(int(m.group(1)) for p in folder.iterdir() if (m := re.fullmatch(r"model_(\d+)\.pt", p.name)))
    if not steps:
        raise FileNotFoundError(f"{folder} has no model_<step>.pt file: not a nanochat checkpoint folder")
    if step is None:
        return steps[-1]
    if step not in steps:
        raise FileNotFoundError(f"{folder} has no checkpoint for step {step} (it has steps {steps})")
    return step


def read_checkpoint(checkpoint_dir: str | os.PathLike, step: int | None = None) -> tuple[dict, dict, int]:
    """(state dict, meta dict, step) of a nanochat checkpoint; weights read with `weights_only=True`."""
    folder = Path(checkpoint_dir)
    step = find_step(folder, step)
    model_file, meta_file = folder / f"model_{step:06d}.pt", folder / f"meta_{step:06d}.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{meta_file} is missing: nanochat writes it next to {model_file.name}")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{meta_file}: not valid JSON ({err})") from err
    if not isinstance(meta, dict) or not isinstance(meta.get("model_config"), dict):
        raise ValueError(f"{meta_file}: expected a JSON object with a 'model_config' object (nanochat's GPTConfig)")
    try:
        state = torch.load(model_file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{model_file}: not a plain tensor state dict ({err})") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{model_file}: expected a dict of tensors (nanochat's model.state_dict())")
    state = {k.removeprefix(_COMPILED_PREFIX): v for k, v in state.items()}
    return state, meta, step


# ----------------------------------------------------------------------------------------------------
# Config and weights


def nanochat_config(model_config: dict, state: dict, **config_overrides) -> NanoGPTConfig:
    """Our config for a nanochat `GPTConfig` (meta_*.json `model_config`) and its state dict.

    Which parts exist is read off the weights (smear, value embeddings, backout, residual scalars,
    vocabulary padding); what the weights cannot show (rotary base, QK scale, window width) follows the
    layout they imply (see the module docstring). `config_overrides` win over everything.
    """
    unknown = sorted(set(model_config) - set(_META_FIELDS) - {"window_pattern"})
    if unknown:
        raise ValueError(f"nanochat model_config has fields this converter does not know: {unknown} "
                         f"(known: {sorted([*_META_FIELDS, 'window_pattern'])})")
    missing = sorted(set(_META_FIELDS) - set(model_config))
    if missing:
        raise ValueError(f"nanochat model_config lacks {missing}")
    fields = {ours: model_config[theirs] for theirs, ours in _META_FIELDS.items()}
    d = fields["hidden_size"]
    if "transformer.wte.weight" not in state:
        raise ValueError("nanochat state dict has no transformer.wte.weight: not a nanochat GPT")
    rows, vocab = state["transformer.wte.weight"].shape[0], fields["vocab_size"]
    if rows == -(-vocab // 64) * 64:
        pad = 64
    elif rows == vocab:
        pad = 1
    else:
        raise ValueError(f"transformer.wte.weight has {rows} rows for vocab_size={vocab}: expected {vocab} or "
                         f"{-(-vocab // 64) * 64} (padded to a multiple of 64)")
    master = any(k in state for k in ("smear_gate.weight", "backout_lambda")) or any(
        k.startswith("value_embeds.") for k in state)
    fields.update(
        head_dim=d // fields["num_attention_heads"], pad_vocab_size_to=pad, norm_eps=TORCH_FLOAT32_EPS,
        residual_scalars="resid_lambdas" in state, smear="smear_gate.weight" in state,
        value_embeddings=any(k.startswith("value_embeds.") for k in state), backout="backout_lambda" in state,
        rope_theta=100000.0 if master else 10000.0, qk_scale=1.2 if master else 1.0,
        init_scheme="nanochat" if master else "nanochat_jan2026",
    )
    pattern = model_config.get("window_pattern")
    if pattern and set(pattern.upper()) != {"L"}:
        fields["window_pattern"] = pattern
        if not master:  # January 2026: half the context to the left, plus the current token
            fields["sliding_window"] = fields["max_position_embeddings"] // 2 + 1
    fields.update(config_overrides)
    try:
        return NanoGPTConfig(**fields)
    except (TypeError, ValueError) as err:
        raise ValueError(f"nanochat model_config {model_config} does not describe a valid model: {err}") from err


def map_state_dict(state: dict, config: NanoGPTConfig) -> dict:
    """nanochat names -> ours, as float32 tensors; refuses unknown, missing and mis-shaped weights by name."""
    mapped, unknown = {}, []
    for name, tensor in state.items():
        for pattern, target in _NAME_RULES:
            if re.fullmatch(pattern, name):
                mapped[re.sub(pattern, target, name)] = tensor.float() if tensor.is_floating_point() else tensor
                break
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(f"nanochat state dict has {len(unknown)} weights this converter does not know, refused "
                         f"rather than dropped: {sorted(unknown)}")
    with torch.device("meta"):  # shapes only, no memory
        expected = {k: tuple(v.shape) for k, v in NanoGPTForCausalLM(config).state_dict().items()}
    missing = sorted(set(expected) - set(mapped))
    extra = sorted(set(mapped) - set(expected))
    if missing or extra:
        raise ValueError(f"nanochat state dict does not fit the model its config describes: missing {missing}, "
                         f"unexpected {extra} (value embeddings belong on layers {config.value_embedding_layers})")
    bad = [f"{k}: {tuple(v.shape)} (expected {expected[k]})"
           for k, v in mapped.items() if tuple(v.shape) != expected[k]]
    if bad:
        raise ValueError(f"nanochat weights with the wrong shape: {bad}")
    return mapped


def model_from_checkpoint(state: dict, meta: dict, tokenizer=None, **config_overrides) -> NanoGPTForCausalLM:
    """`NanoGPTForCausalLM` (float32, eval mode) from a read checkpoint (`read_checkpoint`); a tokenizer
    gives the config its bos/eos/pad ids and must have the checkpoint's vocabulary size."""
    if tokenizer is not None:
        vocab = meta["model_config"].get("vocab_size")
        if len(tokenizer) != vocab:
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the checkpoint's vocab_size is {vocab}")
        config_overrides = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                pad_token_id=tokenizer.pad_token_id, **config_overrides)
    config = nanochat_config(meta["model_config"], state, **config_overrides)
    weights = map_state_dict(state, config)
    with torch.device("meta"):  # no random init of weights that are overwritten right away
        model = NanoGPTForCausalLM(config)
    model.load_state_dict(weights, strict=True, assign=True)
    # the rotary table is a non-persistent buffer: left on the meta device above, computed here
    model.model.rotary_emb.inv_freq = model.model.rotary_emb.compute_inv_freq()
    return model.eval()


def load_nanochat_model(checkpoint_dir: str | os.PathLike, step: int | None = None,
                        tokenizer_dir: str | os.PathLike | None = None, **config_overrides) -> NanoGPTForCausalLM:
    """`NanoGPTForCausalLM` with the weights of a nanochat checkpoint (`step` None = the newest); with
    `tokenizer_dir`, the config gets its special-token ids. Backs `NanoGPTForCausalLM.from_nanochat`."""
    state, meta, _ = read_checkpoint(checkpoint_dir, step)
    tokenizer = load_nanochat_tokenizer(tokenizer_dir) if tokenizer_dir is not None else None
    return model_from_checkpoint(state, meta, tokenizer, **config_overrides)


# ----------------------------------------------------------------------------------------------------
# Tokenizer


class PickledEncoding:
    """What `tiktoken.core.Encoding` unpickles to here: its constructor arguments, nothing else
    (`state`: name, pat_str, mergeable_ranks, special_tokens)."""

    def __setstate__(self, state):
        self.state = state


class NanochatTokenizerUnpickler(pickle.Unpickler):
    """Unpickler for nanochat's `tokenizer.pkl` that resolves only `tiktoken.core.Encoding` (to
    `PickledEncoding`); any other global in the file is refused, so the file cannot run code."""

    ALLOWED = {("tiktoken.core", "Encoding"): PickledEncoding}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: a nanochat tokenizer.pkl holds only "
                                         "a tiktoken.core.Encoding")
        return self.ALLOWED[(module, name)]


def read_tiktoken_pickle(path: str | os.PathLike) -> dict:
    """The validated state of a pickled tiktoken Encoding: pat_str, mergeable_ranks, special_tokens."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            obj = NanochatTokenizerUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as err:
            raise ValueError(f"{path}: not a nanochat tokenizer pickle ({err})") from err
    state = getattr(obj, "state", None)
    if isinstance(state, str):
        raise ValueError(f"{path}: holds tiktoken's registered encoding {state!r} by name, not a nanochat tokenizer")
    ok = (isinstance(state, dict) and isinstance(state.get("pat_str"), str)
          and isinstance(ranks := state.get("mergeable_ranks"), dict)
          and all(isinstance(k, bytes) and isinstance(v, int) for k, v in ranks.items())
          and isinstance(specials := state.get("special_tokens"), dict)
          and all(isinstance(k, str) and isinstance(v, int) for k, v in specials.items()))
    if not ok:
        raise ValueError(f"{path}: expected a tiktoken Encoding with pat_str, mergeable_ranks (bytes -> int) and "
                         "special_tokens (str -> int)")
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{path}: the merge ranks are not the dense ids 0..{len(ranks) - 1}")
    return state


class _RanksConverter(TikTokenConverter):
    """transformers' tiktoken -> `tokenizers` BPE conversion, fed ranks already in memory (the base class
    reads a .tiktoken file through tiktoken instead)."""

    def __init__(self, ranks: dict[bytes, int], pattern: str, specials: list[str]):
        super().__init__(vocab_file=None, pattern=pattern, extra_special_tokens=specials)
        self.ranks = ranks

    def load_tiktoken_bpe(self, tiktoken_url) -> dict[bytes, int]:
        return self.ranks


def load_nanochat_tokenizer(tokenizer_dir: str | os.PathLike) -> PreTrainedTokenizerFast:
    """Our tokenizer (same ids, split pattern and merges; our roles and chat template) from nanochat's
    `tokenizer.pkl`; checked against `token_bytes.pt` when the folder has one."""
    folder = Path(tokenizer_dir)
    pkl = folder / "tokenizer.pkl"
    if not pkl.is_file():
        raise FileNotFoundError(f"{pkl} does not exist: pass nanochat's tokenizer folder (the one with tokenizer.pkl)")
    state = read_tiktoken_pickle(pkl)
    ranks, specials = state["mergeable_ranks"], state["special_tokens"]
    if set(specials) != set(SPECIAL_TOKENS):
        raise ValueError(f"{pkl}: special tokens {sorted(specials)} are not nanochat's {SPECIAL_TOKENS}")
    ordered = sorted(specials, key=specials.get)
    if [specials[t] for t in ordered] != list(range(len(ranks), len(ranks) + len(ordered))):
        raise ValueError(f"{pkl}: the special tokens must take the ids right after the {len(ranks)} merge ranks")
    backend: Tokenizer = _RanksConverter(ranks, state["pat_str"], ordered).converted()
    backend.normalizer = unescape_normalizer()
    tokenizer = tokenizer_from_backend(backend)
    wrong = [t for t in ordered if tokenizer.convert_tokens_to_ids(t) != specials[t]]
    if wrong:
        raise ValueError(f"{pkl}: special tokens {wrong} got other ids than nanochat's")
    reference = folder / "token_bytes.pt"
    if reference.is_file():
        theirs = torch.load(reference, map_location="cpu", weights_only=True)
        if not torch.equal(theirs.long(), token_bytes(tokenizer)):
            raise ValueError(f"{reference} disagrees with the converted tokenizer's byte lengths")
    return tokenizer


def find_tokenizer_dir(checkpoint_dir: str | os.PathLike) -> Path | None:
    """nanochat's tokenizer folder for a checkpoint folder: `<ckpt>/tokenizer`, else the base dir's
    `tokenizer/` two levels up (`$NANOCHAT_BASE_DIR/base_checkpoints/d20` -> `$NANOCHAT_BASE_DIR/tokenizer`)."""
    folder = Path(checkpoint_dir).resolve()
    for candidate in (folder / "tokenizer", folder.parent.parent / "tokenizer"):
        if (candidate / "tokenizer.pkl").is_file():
            return candidate
    return None


# ----------------------------------------------------------------------------------------------------
# The whole folder


def convert_nanochat(checkpoint_dir: str | os.PathLike, output_dir: str | os.PathLike, step: int | None = None,
                     tokenizer_dir: str | os.PathLike | None = None) -> Path:
    """Write a Hugging Face model folder for a nanochat checkpoint; returns `output_dir`.

    The folder is written next to `output_dir` and renamed into place when complete, so a failed
    conversion leaves nothing half-written; an existing non-empty `output_dir` is refused.
    """
    out = Path(output_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; pick a new output folder")
    tokenizer_dir = tokenizer_dir or find_tokenizer_dir(checkpoint_dir)
    if tokenizer_dir is None:
        raise FileNotFoundError(f"no nanochat tokenizer found for {checkpoint_dir} (looked for tokenizer/tokenizer.pkl "
                                "inside it and two levels up); pass its folder as tokenizer_dir / --tokenizer")
    tokenizer = load_nanochat_tokenizer(tokenizer_dir)
    state, meta, _ = read_checkpoint(checkpoint_dir, step)
    model = model_from_checkpoint(state, meta, tokenizer)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        torch.save(token_bytes(tokenizer), tmp / "token_bytes.pt")
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


__all__ = ["NanochatTokenizerUnpickler", "PickledEncoding", "convert_nanochat", "find_step", "find_tokenizer_dir",
           "load_nanochat_model", "load_nanochat_tokenizer", "map_state_dict", "model_from_checkpoint", "nanochat_config",
           "read_checkpoint", "read_tiktoken_pickle"]
