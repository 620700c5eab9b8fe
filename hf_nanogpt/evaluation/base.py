"""Base-model evaluation helpers used by `scripts/base_eval.py`: fixed-prompt samples and the CORE table."""

import torch

# A few prompts whose continuations show at a glance what a base model knows (nanochat's sample set
# in spirit: facts, a little arithmetic, a list).
BASE_PROMPTS = (
    "The capital of France is",
    "The chemical symbol of gold is",
    "If yesterday was Friday, then tomorrow will be",
    "The opposite of hot is",
    "The planets of the solar system are:",
    "My favorite color is",
    "If 5*x + 3 = 13, then x is",
    "def fibonacci(n):",
)


@torch.no_grad()
def sample_base(model, tokenizer, prompts=BASE_PROMPTS, max_new_tokens: int = 16) -> list[dict]:
    """Greedy continuations of BOS-prefixed `prompts`: `[{"prompt", "completion"}]`."""
    from .core import bos_id

    device = next(model.parameters()).device
    bos = bos_id(tokenizer)
    out = []
    for prompt in prompts:
        ids = torch.tensor([[bos] + tokenizer(prompt, add_special_tokens=False)["input_ids"]], device=device)
        gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=bos)
        out.append({"prompt": prompt, "completion": tokenizer.decode(gen[0, ids.shape[1]:].tolist())})
    return out


def format_core_table(result: dict) -> str:
    """A markdown table of a CORE result: one row per task (accuracy, centered, items, seconds), the
    CORE line, and the tasks that were not evaluated with the reason."""
    lines = ["| Task | Accuracy | Centered | Items | Seconds |", "|---|---|---|---|---|"]
    for task, acc in result["accuracy"].items():
        lines.append(f"| {task} | {acc:.4f} | {result['centered'][task]:.4f} | {result['num_examples'][task]} "
                     f"| {result.get('seconds', {}).get(task, float('nan')):.1f} |")
    core = result["core"]
    n = len(result["accuracy"])
    lines.append(f"| **CORE** ({n} tasks) | | **{core:.4f}** | | |" if core is not None else "| **CORE** | | - | | |")
    if result.get("tasks_missing"):
        lines.append("")
        lines.append(f"Not evaluated ({len(result['tasks_missing'])}): " + "; ".join(
            f"{t} ({result.get('missing_reasons', {}).get(t, 'missing')})" for t in result["tasks_missing"]))
    return "\n".join(lines)
