# Run at commit 76ee8d1 (before the nanochat-master architecture) to freeze two saved folders + logits.
import json, subprocess, torch
from pathlib import Path
from safetensors.torch import save_file
from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM

out = Path("tests/golden/nanogpt_76ee8d1")
commit = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
assert commit == "76ee8d1", commit
configs = {
    "nanochat": NanoGPTConfig(vocab_size=97, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                              num_key_value_heads=2, max_position_embeddings=32, window_pattern="SSL",
                              bos_token_id=0, eos_token_id=1, pad_token_id=0),
    "gpt2": NanoGPTConfig.gpt2(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               max_position_embeddings=32, bos_token_id=0, eos_token_id=1),
}
torch.manual_seed(1234)
ids = torch.randint(0, 97, (2, 24))
for name, cfg in configs.items():
    model = NanoGPTForCausalLM(cfg).eval()
    with torch.no_grad():  # every weight non-degenerate, so each part of the layout changes the logits
        for n, p in model.named_parameters():
            if n.endswith("lambdas"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p) if n.endswith("resid_lambdas") else 0.3 * torch.randn_like(p))
            elif "norm" in n and n.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0, 0.3 if p.ndim == 2 and "embed" not in n else 1.0 if "embed" in n else 0.1)
    folder = out / name
    model.save_pretrained(folder)
    for f in folder.glob("*.py"):
        f.unlink()  # the fixture proves *today's* code reads the old folder; its own copy of the code is not needed
    with torch.no_grad():
        logits = model(ids).logits
    save_file({"input_ids": ids, "logits": logits.contiguous()}, str(folder / "expected_logits.safetensors"))
    print(name, sorted(p.name for p in folder.iterdir()), json.loads((folder / "config.json").read_text()))
