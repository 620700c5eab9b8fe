"""Faster inference on CPUs: int8 weights (torchao) and compiled decoding with a static cache.

    python scripts/chat_cli.py -i sft --quantize int8 --compile
    python scripts/chat_web.py --model sft --quantize int8 --compile
    python scripts/quantize.py --model sft --output_dir out/sft-int8     # save it; it reloads quantized
    python scripts/bench.py generate                                     # speed, size and quality of each

int8 (`--quantize int8`). The weights of every `nn.Linear` (q/k/v/o, the MLP, and the head when it
is not tied to the embedding; not nanochat master's tiny smear and value-embedding gates) become int8 with one float scale per output row, through torchao's
`Int8WeightOnlyConfig` as transformers' `TorchAoConfig` applies it at load time (`quantize_` under
the hood; `torch.ao.quantization.quantize_dynamic` is deprecated). A tied head stays in float: it is
the embedding table too. `save_pretrained` writes the int8 tensors and the quantization config into
the folder (safetensors), and `from_pretrained` of that folder gives the quantized model back.
Activations stay in the model's dtype. The speed comes from `torch.compile`: in eager mode the int8
matrix is converted to floats at every call; compiled with bfloat16 activations, inductor lowers
the pattern to a fused int8 x bfloat16 matmul (`aten._weight_int8pack_mm`).

Compiled decoding (`--compile`). The model's generation config asks for a static cache and carries a
transformers `CompileConfig`; the engine (`hf_nanogpt.engine`) then decodes through a `torch.compile`d
forward over a `StaticCache`. Compilation takes seconds to minutes on a CPU, once per shape.

torchao is an optional extra (`pip install "hf_nanogpt[quantize]"`); without it `--quantize int8`
stops with that instruction.
"""

import os
from pathlib import Path

QUANTIZE_CHOICES = ("none", "int8")


def require_torchao() -> None:
    """Raise ImportError naming the extra to install when torchao is missing."""
    try:
        import torchao  # noqa: F401
    except ImportError:
        raise ImportError("--quantize int8 needs torchao: pip install 'hf_nanogpt[quantize]' (or pip install torchao)") from None


def int8_quantization_config(model_config):
    """transformers' `TorchAoConfig` for int8 weights in every Linear (a tied head excluded)."""
    require_torchao()
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import TorchAoConfig

    # nanochat master's gates (smear 24 -> 1, value-embedding 12 -> kv heads) stay float: a few dozen weights
    # each, so int8 saves nothing and only rounds a sigmoid gate. Patterns are regexes matched from the start
    # of the parameter name (transformers 5.17 and 5.24 alike). A tied head is the embedding table: float.
    skip = [r".*\.smear_gate", r".*\.ve_gate"]
    if getattr(model_config, "tie_word_embeddings", False):
        skip.append("lm_head")
    return TorchAoConfig(Int8WeightOnlyConfig(), modules_to_not_convert=skip)


def load_model(path, device: str = "cpu", dtype=None, quantize: str = "none"):
    """The causal LM saved in `path`, in `dtype` (float32 by default), optionally with int8 weights, eval mode."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    import hf_nanogpt  # noqa: F401  (registers model_type="nanogpt")

    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize={quantize!r}: expected one of {QUANTIZE_CHOICES}")
    kwargs = {}
    if quantize == "int8":
        kwargs["quantization_config"] = int8_quantization_config(AutoConfig.from_pretrained(path))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32, **kwargs)
    return model.to(device).eval()


def load_for_inference(name_or_path, device: str = "cpu", dtype=None, quantize: str = "none"):
    """`(model, tokenizer)` from a stage name or folder (`load_model` + its tokenizer)."""
    from transformers import AutoTokenizer

    from .paths import resolve_stage

    path = resolve_stage(name_or_path)
    return load_model(path, device, dtype, quantize), AutoTokenizer.from_pretrained(path)


def enable_compiled_decoding(model, backend: str = "inductor"):
    """Ask for a static cache and compiled decoding in `model.generation_config` (what the engine reads).

    `backend` is `torch.compile`'s (`inductor` compiles to C++ / Triton; `aot_eager` only traces, which
    tests use to check the static-cache path in seconds). Returns the model.
    """
    from transformers import CompileConfig

    model.generation_config.cache_implementation = "static"
    model.generation_config.compile_config = CompileConfig(backend=backend, mode="default", fullgraph=False)
    return model


def weights_bytes(folder) -> int:
    """Bytes of the weight files of a saved model folder (`*.safetensors`)."""
    return sum(os.path.getsize(p) for p in Path(folder).glob("*.safetensors"))


__all__ = ["QUANTIZE_CHOICES", "enable_compiled_decoding", "int8_quantization_config", "load_for_inference",
           "load_model", "require_torchao", "weights_bytes"]
