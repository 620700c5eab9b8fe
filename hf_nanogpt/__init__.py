"""hf_nanogpt: nanoGPT and nanochat rebuilt as first-class Hugging Face citizens.

Importing the package registers `model_type="nanogpt"` with transformers' Auto classes
(`AutoConfig`, `AutoModel`, `AutoModelForCausalLM`) and PEFT's default LoRA targets, and marks the
classes so that `save_pretrained` writes the modeling code next to the weights: a saved folder
loads with `AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` on a machine that
does not have this package.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_nanogpt import NanoGPTConfig
from .modeling_nanogpt import NanoGPTForCausalLM, NanoGPTModel, NanoGPTPreTrainedModel

__version__ = "0.1.0"

# Default LoRA targets for PEFT (`LoraConfig()` without target_modules): every projection, as
# nanochat-scale models gain little from adapting only q/v (in_proj / out_proj: the Mamba-2 mixer's; MoE experts
# are 3-D parameters, not Linear modules, so LoRA leaves them and the router alone).
LORA_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "in_proj", "out_proj"]


def _register() -> None:
    AutoConfig.register(NanoGPTConfig.model_type, NanoGPTConfig, exist_ok=True)
    AutoModel.register(NanoGPTConfig, NanoGPTModel, exist_ok=True)
    AutoModelForCausalLM.register(NanoGPTConfig, NanoGPTForCausalLM, exist_ok=True)
    # save_pretrained copies the defining modules and fills config.auto_map for these classes.
    NanoGPTConfig.register_for_auto_class("AutoConfig")
    NanoGPTModel.register_for_auto_class("AutoModel")
    NanoGPTForCausalLM.register_for_auto_class("AutoModelForCausalLM")
    try:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as lora_targets
    except ImportError:  # peft is a dependency, but keep the model usable without it
        return
    lora_targets.setdefault(NanoGPTConfig.model_type, LORA_TARGET_MODULES)


_register()

__all__ = ["NanoGPTConfig", "NanoGPTModel", "NanoGPTForCausalLM", "NanoGPTPreTrainedModel", "LORA_TARGET_MODULES"]
