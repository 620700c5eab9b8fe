"""Hub export, offline: huggingface_hub's real client code talks HTTP to `LocalHub` (tests/local_hub.py),
a stand-in for the Hub on 127.0.0.1, pointed at with `endpoint=` or `HF_ENDPOINT`. Only the transport is
replaced: `HfApi` builds and sends every request itself (create_repo, create_branch, validate-yaml,
preupload, LFS batch + PUT + verify, commit; repo_info and resolve for downloads). Xet storage is switched
off (`HF_HUB_DISABLE_XET`) because its client moves bytes from Rust, outside the HTTP layer a local server
can answer; the LFS path it falls back to is the Hub's own protocol.

Then a fresh process in which `hf_nanogpt` cannot be imported runs the card's usage snippet unchanged
(download through the stand-in, `apply_chat_template` + `generate`) and loads the uploaded folders.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from local_hub import TOKEN, LocalHub

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = LocalHub(tmp_path_factory.mktemp("local_hub")).start()
    yield server
    server.stop()


@pytest.fixture
def hub_client(monkeypatch):
    """Let this process's huggingface_hub reach the stand-in: conftest sets HF_HUB_OFFLINE for the suite,
    and Xet moves bytes outside HTTP (see the module docstring)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)


def _subprocess_env(hub: "LocalHub", home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, HF_HOME=str(home), HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="0",
               HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    return env


# ---------------------------------------------------------------------------------------------- a run folder
SECTIONS = {
    "environment": {"gpus": [], "cpu": "test CPU", "cpu_count": 2, "torch": torch.__version__,
                    "transformers": "5.x", "git_commit": "0123456789abcdef0123"},
    "base-train": {"steps": 400, "tokens": 1_638_400, "final_loss": 3.25, "val_bpb": 1.91, "train_time_s": 300.0,
                   "world_size": 1},
    "base-eval": {"CORE": 0.0123, "tasks_missing": [], "val_bpb": 1.875, "wall_time_s": 40.0},
    "mid-train": {"steps": 250, "tokens": 1_024_000, "final_loss": 1.5, "val_bpb": 0.75, "train_time_s": 200.0,
                  "world_size": 1},
    "chat-eval-mid": {"SpellingBee": 0.3125, "ChatCORE": 0.0625, "ChatCORE_tasks_missing": ["GSM8K"]},
    "sft-train": {"steps": 100, "tokens": 409_600, "final_loss": 1.25, "val_bpb": 0.6875, "train_time_s": 90.0,
                  "world_size": 1},
    "chat-eval-sft": {"SpellingBee": 0.4375, "ARC-Easy": 0.2656, "ChatCORE": 0.0938,
                      "ChatCORE_tasks_missing": ["GSM8K"]},
}


def _tiny_model(tokenizer):
    from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM

    torch.manual_seed(0)
    config = NanoGPTConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return NanoGPTForCausalLM(config).eval()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A run folder as the training scripts leave it: `sft/` (model, tokenizer, remote code, recipe.yaml, plus
    `checkpoints/` and `adapter/` that must stay local, a stale README.md) and report sections."""
    from hf_nanogpt import report
    from hf_nanogpt.checkpointing import save_model_folder
    from hf_nanogpt.recipe import TrainRecipe, save_recipe

    run = tmp_path_factory.mktemp("run")
    sft = run / "sft"
    save_model_folder(sft, _tiny_model(tiny_tokenizer), tiny_tokenizer)
    recipe = TrainRecipe(stage="sft", init_from="mid", max_seq_len=256, lora_r=8,
                         mixture=[{"task": "arithmetic", "size": 100}, {"task": "spelling_bee", "size": 100}])
    save_recipe(recipe, sft / "recipe.yaml", {"num_iterations": 100, "total_batch_size": 4096, "total_tokens": 409_600})
    (sft / "train_log.jsonl").write_text('{"step": 1, "loss": 2.5}\n')
    (sft / "README.md").write_text("stale card, to be replaced\n")
    (sft / ".lock").write_text("")
    (sft / "checkpoints" / "step_000050").mkdir(parents=True)
    (sft / "checkpoints" / "step_000050" / "optimizer.pt").write_bytes(b"\0" * 64)
    (sft / "adapter").mkdir()
    (sft / "adapter" / "adapter_config.json").write_text('{"base_model_name_or_path": "/local/mid"}')
    for section, data in SECTIONS.items():
        report.append(run, section, data)
    return run


def _expected_upload(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}  # README replaced


# ---------------------------------------------------------------------------------------------- the card
def test_model_card_has_hub_metadata_metrics_architecture_and_recipe(run_dir):
    from huggingface_hub import ModelCard

    from hf_nanogpt.hub import build_model_card, safetensors_summary

    card_text = build_model_card(run_dir / "sft", "me/tiny-chat")
    card = ModelCard(card_text)
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert card.data.license == "mit"
    assert {"nanogpt", "nanochat", "hf_nanogpt"} <= set(card.data.tags)
    assert LocalHub(Path("/nonexistent")).validate_card(card_text) == []
    # metrics: nanochat's BASE / MID / SFT table, starred partial ChatCORE, and one row per training stage
    assert re.search(r"\| CORE \| 0\.0123 \| - \| - \|", card_text)
    assert re.search(r"\| ChatCORE \| - \| 0\.0625\* \| 0\.0938\* \|", card_text)
    assert re.search(r"\| SpellingBee \| - \| 0\.3125 \| 0\.4375 \|", card_text)
    assert "missing: GSM8K" in card_text and "**SFT** column" in card_text
    assert re.search(r"\| BASE \| 400 \| 1\.64M \| 3\.2500 \| 1\.8750 \| 5\.0 min \| 1 \|", card_text)  # base-eval bpb
    assert re.search(r"\| SFT \| 100 \| 410K \| 1\.2500 \| 0\.6875 \| 1\.5 min \| 1 \|", card_text)
    # architecture: parameters from the safetensors headers equal the model's own count
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run_dir / "sft")
    n = sum(p.numel() for p in model.parameters())
    assert safetensors_summary(run_dir / "sft")["parameters"] == n
    assert f"({n:,})" in card_text and "| depth (layers) | 2 |" in card_text
    assert "| width (hidden size) | 64 |" in card_text
    assert "4 query / 4 key-value, head dim 16" in card_text
    # recipe: summary line and the file verbatim
    assert "stage `sft`; started from `mid`; task mixture `arithmetic`, `spelling_bee`; 100 steps" in card_text
    assert "LoRA rank 8" in card_text
    assert (run_dir / "sft" / "recipe.yaml").read_text().rstrip() in card_text
    # usage: a chat model gets the chat snippet
    usage = re.search(r"```python\n(.*?)```", card_text, re.S).group(1)
    assert "trust_remote_code=True" in usage and "add_generation_prompt=True" in usage
    assert "model.generate(" in usage and "'me/tiny-chat'" in usage


def test_base_model_card_uses_completion_and_says_when_metrics_are_missing(tmp_path, tiny_tokenizer):
    from huggingface_hub import ModelCard

    from hf_nanogpt.checkpointing import save_model_folder
    from hf_nanogpt.hub import build_model_card

    save_model_folder(tmp_path / "base", _tiny_model(tiny_tokenizer), tiny_tokenizer)
    text = build_model_card(tmp_path / "base", "me/tiny-base", revision="v1")
    assert "apply_chat_template" not in text and "tokenizer.bos_token +" in text
    assert "revision='v1'" in text and "No report sections were recorded" in text
    assert "No `recipe.yaml`" in text and "conversational" not in ModelCard(text).data.tags
    with pytest.raises(FileNotFoundError, match="no report/ sub-folder"):
        build_model_card(tmp_path / "base", "me/tiny-base", run_dir=tmp_path / "nowhere")


def test_bad_folders_are_refused_before_any_request(tmp_path, run_dir, hub, hub_client):
    from hf_nanogpt.hub import push_model_folder

    before = len(hub.requests)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        push_model_folder(tmp_path / "missing", "me/x", endpoint=hub.url, token=TOKEN)
    broken = tmp_path / "broken"
    shutil.copytree(run_dir / "sft", broken, ignore=shutil.ignore_patterns("tokenizer.json", "checkpoints"))
    with pytest.raises(FileNotFoundError, match=r"lacks tokenizer\.json"):
        push_model_folder(broken, "me/x", endpoint=hub.url, token=TOKEN)
    shutil.copy(run_dir / "sft" / "tokenizer.json", broken)
    (broken / "modeling_nanogpt.py").unlink()
    with pytest.raises(FileNotFoundError, match=r"auto_map\.AutoModel.* needs modeling_nanogpt\.py"):
        push_model_folder(broken, "me/x", endpoint=hub.url, token=TOKEN)
    config = json.loads((broken / "config.json").read_text())
    del config["auto_map"]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="no auto_map.AutoModelForCausalLM"):
        push_model_folder(broken, "me/x", endpoint=hub.url, token=TOKEN)
    with pytest.raises(FileNotFoundError, match="has no report/ sub-folder"):
        push_model_folder(run_dir / "sft", "me/x", run_dir=tmp_path, endpoint=hub.url, token=TOKEN)
    assert len(hub.requests) == before


# ---------------------------------------------------------------------------------------------- uploads
def test_push_function_creates_private_repo_branch_and_one_commit_per_push(run_dir, hub, hub_client):
    from hf_nanogpt.hub import push_model_folder

    sft = run_dir / "sft"
    info = push_model_folder(sft, "me/fn-chat", private=True, endpoint=hub.url, token=TOKEN)
    assert hub.repos["me/fn-chat"]["private"] and info.repo_url.repo_id == "me/fn-chat"
    files = hub.files("me/fn-chat")
    assert set(files) == _expected_upload(sft) | {"README.md"}  # no checkpoints/, adapter/, hidden files
    assert all(files[name] == (sft / name).read_bytes() for name in files if name != "README.md")
    assert hashlib.sha256(files["model.safetensors"]).hexdigest() in hub.lfs_uploads  # weights went through LFS
    assert files["README.md"].decode().startswith("---\n") and b"stale card" not in files["README.md"]
    # a second push to a branch: the branch starts from main, one commit, main untouched
    info2 = push_model_folder(sft, "me/fn-chat", revision="v2", commit_message="second", endpoint=hub.url, token=TOKEN)
    commits = hub.repos["me/fn-chat"]["commits"]
    assert [c["revision"] for c in commits] == ["main", "v2"] and commits[1]["summary"] == "second"
    assert commits[1]["oid"] == info2.oid and hub.repos["me/fn-chat"]["branches"]["main"] == info.oid
    assert commits[1]["files"] == ["README.md"]  # unchanged files are skipped by preupload's oids
    assert b"revision='v2'" in hub.files("me/fn-chat", "v2")["README.md"]
    assert not hub.unhandled, hub.unhandled


def test_push_to_a_bare_name_lands_in_the_user_namespace(run_dir, hub, hub_client):
    from hf_nanogpt.hub import push_model_folder

    info = push_model_folder(run_dir / "sft", "bare-name", endpoint=hub.url, token=TOKEN)
    assert info.repo_url.repo_id == "local-user/bare-name"
    card = hub.files("local-user/bare-name")["README.md"].decode()
    assert "repo_id = 'local-user/bare-name'" in card and not hub.repos["local-user/bare-name"]["private"]


def test_push_without_a_token_is_refused_by_the_hub(run_dir, hub, hub_client, monkeypatch, tmp_path):
    from huggingface_hub.errors import HfHubHTTPError

    from hf_nanogpt.hub import push_model_folder

    monkeypatch.setenv("HF_HOME", str(tmp_path))  # no stored login either
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(HfHubHTTPError, match="401"):
        push_model_folder(run_dir / "sft", "me/anonymous", endpoint=hub.url, token=False)
    assert "me/anonymous" not in hub.repos


@pytest.fixture(scope="module")
def script_push(run_dir, hub, tmp_path_factory):
    """`scripts/push_to_hub.py` run as a user would, HF_ENDPOINT pointing at the stand-in."""
    home = tmp_path_factory.mktemp("hf_home_script")
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "push_to_hub.py"), str(run_dir / "sft"),
                          "me/tiny-chat", "--private"], capture_output=True, text=True, timeout=300,
                         env=_subprocess_env(hub, home), cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_push_script_uploads_model_tokenizer_code_and_card(script_push, run_dir, hub):
    assert f"{hub.url}/me/tiny-chat/commit/" in script_push.stdout
    assert "from_pretrained('me/tiny-chat', trust_remote_code=True)" in script_push.stdout
    files = hub.files("me/tiny-chat")
    sft = run_dir / "sft"
    assert set(files) == _expected_upload(sft) | {"README.md"}
    assert {"modeling_nanogpt.py", "configuration_nanogpt.py", "tokenizer.json", "chat_template.jinja",
            "recipe.yaml"} <= set(files)
    assert all(files[name] == (sft / name).read_bytes() for name in files if name != "README.md")
    assert hub.repos["me/tiny-chat"]["private"] and len(hub.repos["me/tiny-chat"]["commits"]) == 1
    assert ("POST", "/api/validate-yaml") in hub.requests and not hub.unhandled, hub.unhandled


def _run_script(argv: list[str]):
    import runpy

    old = sys.argv
    sys.argv = [str(REPO / "scripts" / "push_to_hub.py"), *argv]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    finally:
        sys.argv = old


def test_script_help_and_card_only(run_dir, hub, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _run_script(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--revision" in text and "--private" in text and "--card_only" in text
    before = len(hub.requests)
    _run_script([str(run_dir / "sft"), "me/preview", "--card_only", "--license", "apache-2.0"])
    card = capsys.readouterr().out
    assert card.startswith("---\n") and "license: apache-2.0" in card and "repo_id = 'me/preview'" in card
    assert len(hub.requests) == before  # nothing was sent


@pytest.fixture(scope="module")
def mixin_push(run_dir, hub, tmp_path_factory):
    """`model.push_to_hub` + `tokenizer.push_to_hub` (transformers' PushToHubMixin) in a process that has
    the package, HF_ENDPOINT pointing at the stand-in."""
    code = ("import sys, hf_nanogpt\n"
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
            "model = AutoModelForCausalLM.from_pretrained(sys.argv[1])\n"
            "assert type(model).__module__ == 'hf_nanogpt.modeling_nanogpt'\n"
            "model.push_to_hub('me/mixin-chat', commit_message='model via push_to_hub')\n"
            "AutoTokenizer.from_pretrained(sys.argv[1]).push_to_hub('me/mixin-chat')\n")
    home = tmp_path_factory.mktemp("hf_home_mixin")
    out = subprocess.run([sys.executable, "-c", code, str(run_dir / "sft")], capture_output=True, text=True,
                         timeout=300, env=_subprocess_env(hub, home), cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_model_push_to_hub_uploads_the_remote_code(mixin_push, hub):
    files = hub.files("me/mixin-chat")
    assert {"model.safetensors", "config.json", "modeling_nanogpt.py", "configuration_nanogpt.py",
            "generation_config.json", "tokenizer.json", "tokenizer_config.json", "README.md"} <= set(files)
    config = json.loads(files["config.json"])
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_nanogpt.NanoGPTForCausalLM"
    assert config["auto_map"]["AutoConfig"] == "configuration_nanogpt.NanoGPTConfig"
    assert files["modeling_nanogpt.py"] == (REPO / "hf_nanogpt" / "modeling_nanogpt.py").read_bytes()
    assert [c["summary"] for c in hub.repos["me/mixin-chat"]["commits"]][0] == "model via push_to_hub"
    assert not hub.unhandled, hub.unhandled


# Runs in a fresh interpreter where `import hf_nanogpt` fails, with no PYTHONPATH and cwd outside the
# repository. 1. The card's usage snippet, unchanged: it downloads `repo_id` from the stand-in Hub
# (HF_ENDPOINT), chats through apply_chat_template + generate. 2. The uploaded folders themselves load
# with the Auto classes and give the same logits (script upload and model.push_to_hub upload).
FRESH_PROCESS = r"""
import json, re, sys
sys.modules["hf_nanogpt"] = None
from pathlib import Path
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
script_dir, mixin_dir, repo_id = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
try:
    import hf_nanogpt
    raise SystemExit("hf_nanogpt is importable")
except ImportError:
    pass
snippet = re.search(r"```python\n(.*?)```", (script_dir / "README.md").read_text(), re.S).group(1)
assert f"repo_id = {repo_id!r}" in snippet
ns = {}
exec(snippet, ns)
model, tokenizer, inputs, output = ns["model"], ns["tokenizer"], ns["inputs"], ns["output"]
prompt = inputs["input_ids"][0].tolist()
new = output[0, len(prompt):].tolist()
ids = inputs["input_ids"]
with torch.no_grad():
    reference = model(ids).logits
    folders = {}
    for folder in (script_dir, mixin_dir):
        other = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
        chat = tok.apply_chat_template([{"role": "user", "content": "What is 12 + 30?"}], add_generation_prompt=True)
        chat = list(chat["input_ids"] if hasattr(chat, "keys") else chat)
        folders[folder.parent.name] = {"module": type(other).__module__, "same_prompt": chat == prompt,
                                       "same_logits": torch.equal(other(ids).logits, reference)}
print(json.dumps({"module": type(model).__module__, "prompt": prompt, "new": new, "folders": folders,
                  "reply": tokenizer.decode(new, skip_special_tokens=True)}))
"""


def test_fresh_process_without_the_package_downloads_loads_and_chats(script_push, mixin_push, run_dir, hub,
                                                                      tiny_tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    from hf_nanogpt.tokenization import render_for_completion

    env = {k: v for k, v in _subprocess_env(hub, tmp_path / "hf_home").items() if k != "PYTHONPATH"}
    before = len(hub.requests)
    out = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(hub.branch_dir("me/tiny-chat")),
                          str(hub.branch_dir("me/mixin-chat")), "me/tiny-chat"],
                         capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # the snippet downloaded through the Hub API (private repo: with the token) and ran the remote code
    downloads = {p.rsplit("/", 1)[-1] for m, p in hub.requests[before:] if m == "GET" and "/me/tiny-chat/resolve/" in p}
    assert {"config.json", "model.safetensors", "modeling_nanogpt.py", "tokenizer.json"} <= downloads
    assert result["module"].startswith("transformers_modules.")
    for name, folder in result["folders"].items():  # the uploaded folders load alone and agree
        assert folder["module"].startswith("transformers_modules.") and folder["same_logits"], (name, folder)
        assert folder["same_prompt"], (name, folder)
    # the chat template rendered our format; greedy decoding equals the original model's in this process
    prompt = render_for_completion(tiny_tokenizer, [{"role": "user", "content": "What is 12 + 30?"}])
    assert result["prompt"] == prompt
    model = AutoModelForCausalLM.from_pretrained(run_dir / "sft").eval()
    expected = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                              max_new_tokens=64, do_sample=False)[0, len(prompt):].tolist()
    assert len(result["new"]) > 0 and result["new"] == expected
    assert result["reply"] == tiny_tokenizer.decode(expected, skip_special_tokens=True)
    assert not hub.unhandled, hub.unhandled
