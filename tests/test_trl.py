"""TRL: `trl.SFTTrainer` fine-tunes NanoGPTForCausalLM on a conversational dataset (`messages` column) with
our tokenizer's chat template, assistant-only loss through the template's `{% generation %}` blocks."""

import math

import pytest
import torch

trl = pytest.importorskip("trl", reason="trl is not installed (pip install trl)")

from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM  # noqa: E402
from hf_nanogpt.tokenization import render_conversation  # noqa: E402


def _conversations(n: int) -> list[list[dict]]:
    """Small arithmetic chats, some with a system message and two turns."""
    rows = []
    for i in range(n):
        a, b = 3 * i + 1, 7 * i + 2
        messages = [{"role": "user", "content": f"What is {a} + {b}?"},
                    {"role": "assistant", "content": f"{a} + {b} = {a + b}."}]
        if i % 3 == 0:
            messages = [{"role": "system", "content": "Answer briefly."}, *messages,
                        {"role": "user", "content": "And doubled?"},
                        {"role": "assistant", "content": f"{2 * (a + b)}"}]
        rows.append({"messages": messages})
    return rows


def test_sft_trainer_trains_nanogpt_with_assistant_only_loss(tmp_path, tiny_tokenizer_dir):
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)  # a private copy: TRL sets its pad token
    # TRL uses our template as is (no swapped-in training template) and sees <|assistant_end|> supervised
    from trl.chat_template_utils import has_generation_markers, is_chat_template_stop_token_trained

    assert has_generation_markers(tokenizer.chat_template) and is_chat_template_stop_token_trained(tokenizer)
    torch.manual_seed(0)
    config = NanoGPTConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           max_position_embeddings=128, init_scheme="gpt2", bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = NanoGPTForCausalLM(config)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rows = _conversations(24)
    args = SFTConfig(output_dir=str(tmp_path), max_steps=12, per_device_train_batch_size=8, learning_rate=3e-3,
                     lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to="none",
                     assistant_only_loss=True, max_length=128, use_cpu=True, seed=0, dataloader_num_workers=0,
                     disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)

    # TRL's tokenization of each conversation equals ours, and its labels (built from the template's
    # assistant mask) supervise exactly the tokens our loss mask does
    assert len(trainer.train_dataset) == len(rows)
    for i, example in enumerate(trainer.train_dataset):
        ids, mask = render_conversation(tokenizer, rows[i]["messages"])
        assert example["input_ids"] == ids, i
        assert example["labels"] == [t if m else -100 for t, m in zip(ids, mask)], i

    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert len(losses) == 12 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5, losses
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert "lm_head.weight" in changed and any("q_proj" in n for n in changed)
    # the trained model still generates through the chat template
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is 4 + 9?"}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    out = model.eval().generate(**prompt.to(model.device), max_new_tokens=8, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]
