"""PEFT LoRA on NanoGPTForCausalLM: default targets for model_type "nanogpt", adapters saved and reloaded
with AutoPeftModelForCausalLM (offline, base model from a local folder), and merge_and_unload giving the
same logits before and after the merge and after reloading the merged save_pretrained folder."""

import json

import pytest
import torch
from peft import AutoPeftModelForCausalLM, LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import AutoModelForCausalLM

from hf_nanogpt import LORA_TARGET_MODULES, NanoGPTConfig, NanoGPTForCausalLM
from hf_nanogpt.checkpointing import save_model_folder
from hf_nanogpt.tokenization import render_conversation

CONVERSATIONS = [
    [{"role": "user", "content": "What is 17 + 25?"}, {"role": "assistant", "content": "17 + 25 = 42."}],
    [{"role": "user", "content": "Spell 'lora'."}, {"role": "assistant", "content": "l-o-r-a"}],
    [{"role": "user", "content": "How many r in 'mirror'?"}, {"role": "assistant", "content": "There are 3."}],
]


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory, tiny_tokenizer):
    """A saved tiny model with the SwiGLU MLP, so that every default target (incl. gate_proj) exists."""
    torch.manual_seed(0)
    config = NanoGPTConfig(vocab_size=len(tiny_tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=128, hidden_act="swiglu", init_scheme="gpt2",
                           bos_token_id=tiny_tokenizer.bos_token_id, eos_token_id=tiny_tokenizer.eos_token_id,
                           pad_token_id=tiny_tokenizer.pad_token_id)
    folder = tmp_path_factory.mktemp("lora_base")
    save_model_folder(folder, NanoGPTForCausalLM(config), tiny_tokenizer)
    return folder


def _batch(tokenizer):
    """Right-padded chat batch with assistant-only labels (HF convention: aligned with input_ids)."""
    rows = [render_conversation(tokenizer, c) for c in CONVERSATIONS]
    T = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([ids + [pad] * (T - len(ids)) for ids, _ in rows])
    attention_mask = torch.tensor([[1] * len(ids) + [0] * (T - len(ids)) for ids, _ in rows])
    labels = torch.tensor([[t if m else -100 for t, m in zip(ids, mask)] + [-100] * (T - len(ids)) for ids, mask in rows])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _lora_modules(model) -> set[str]:
    return {name.split(".")[-1] for name, module in model.named_modules() if isinstance(module, LoraLayer)}


def test_default_lora_targets_are_registered_for_nanogpt(base_folder):
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    assert TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING["nanogpt"] == LORA_TARGET_MODULES
    model = AutoModelForCausalLM.from_pretrained(base_folder)
    peft_model = get_peft_model(model, LoraConfig())  # no target_modules, no task_type
    assert set(peft_model.peft_config["default"].target_modules) == set(LORA_TARGET_MODULES)
    # every projection of every block is adapted (2 layers x 7; in_proj / out_proj are Mamba layers', absent
    # here), the embedding and LM head are not
    attention_mlp = set(LORA_TARGET_MODULES) - {"in_proj", "out_proj"}
    wrapped = [n for n, m in peft_model.named_modules() if isinstance(m, LoraLayer)]
    assert len(wrapped) == 2 * len(attention_mlp) and _lora_modules(peft_model) == attention_mlp
    assert not any("lm_head" in n or "embed" in n for n in wrapped)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    r = peft_model.peft_config["default"].r
    expected = sum(r * (m.in_features + m.out_features) for _, m in peft_model.named_modules()
                   if isinstance(m, LoraLayer) and hasattr(m, "in_features"))
    assert sum(peft_model.get_base_model().get_parameter(n).numel() for n in
               [n.removeprefix("base_model.model.") for n in trainable]) == expected


def test_lora_adapters_reload_and_merge_with_equal_logits(tmp_path, base_folder, tiny_tokenizer):
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(base_folder)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM"))
    batch = _batch(tiny_tokenizer)
    # a few steps, so that the adapters are non-zero (LoRA's B matrices start at zero)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=3e-2)
    losses = []
    for _ in range(10):
        loss = peft_model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5 and losses == sorted(losses, reverse=True), losses
    assert all(p.abs().sum() > 0 for n, p in peft_model.named_parameters() if "lora_B" in n)
    peft_model.eval()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        logits = peft_model(input_ids=ids, attention_mask=mask).logits
        with peft_model.disable_adapter():
            base_logits = peft_model(input_ids=ids, attention_mask=mask).logits
    assert (logits - base_logits).abs().max() > 1e-2  # the adapters change the model

    # adapters: save, reload offline with AutoPeftModelForCausalLM (base model from the local folder)
    peft_model.save_pretrained(tmp_path / "adapter")
    adapter_config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(base_folder)
    assert set(adapter_config["target_modules"]) == set(LORA_TARGET_MODULES)
    reloaded = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "adapter").eval()
    assert isinstance(reloaded, PeftModel) and isinstance(reloaded.get_base_model(), NanoGPTForCausalLM)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids, attention_mask=mask).logits, logits, rtol=0, atol=1e-6)

    # merge: a plain NanoGPTForCausalLM with the same logits; save_pretrained + reload gives them again
    merged = reloaded.merge_and_unload()
    assert type(merged) is NanoGPTForCausalLM and not _lora_modules(merged)
    with torch.no_grad():
        merged_logits = merged(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(merged_logits, logits, rtol=1e-5, atol=1e-5)
    save_model_folder(tmp_path / "merged", merged, tiny_tokenizer)
    assert (tmp_path / "merged" / "modeling_nanogpt.py").is_file()
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_nanogpt.NanoGPTForCausalLM"
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert not any("lora" in k for k in final.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(final(input_ids=ids, attention_mask=mask).logits, merged_logits, rtol=0, atol=0)
    # and generation agrees between the adapter model and the merged one
    prompt = torch.tensor([render_conversation(tiny_tokenizer, CONVERSATIONS[0][:1])[0]
                           + [tiny_tokenizer.convert_tokens_to_ids("<|assistant_start|>")]])
    kwargs = dict(max_new_tokens=12, do_sample=False, attention_mask=torch.ones_like(prompt))
    adapter_again = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "adapter").eval()
    assert adapter_again.generate(input_ids=prompt, **kwargs).tolist() == final.generate(prompt, **kwargs).tolist()
