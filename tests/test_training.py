"""The training loop: it learns, resumes exactly, checkpoints atomically, and fails clearly on bad input."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_nanogpt.checkpointing import Checkpointer
from hf_nanogpt.recipe import TrainRecipe
from hf_nanogpt.training import NonFiniteLossError, finalize, prepare_stage, run, train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """~300 kB of real text (stdlib sources) in one local .txt file: the last 10% is validation."""
    from hf_nanogpt.data.corpus import stdlib_files

    path = tmp_path_factory.mktemp("corpus") / "code.txt"
    with path.open("w") as f:
        for file in stdlib_files("train")[:60]:
            f.write(file.read_text(encoding="utf-8", errors="replace")[:6000] + "\n\n")
    return path


def recipe(tmp_path: Path, corpus: Path, tokenizer_dir: Path, **overrides) -> TrainRecipe:
    fields = dict(stage="base", output_dir=str(tmp_path / "base"), tokenizer=str(tokenizer_dir),
                  train_data=str(corpus), depth=2, aspect_ratio=32, head_dim=32, max_seq_len=64,
                  device_batch_size=2, total_batch_size=256, num_iterations=6, eval_every=3, eval_tokens=512,
                  save_every=-1, warmdown_ratio=0.5, dtype="float32", seed=7, muon_momentum_warmup_steps=3,
                  embedding_lr=0.05, unembedding_lr=0.004, matrix_lr=0.02,
                  # the schedule these tests were written for (the defaults are nanochat master's now)
                  warmup_steps=0, final_lr_frac=0.0, weight_decay=0.0, grad_clip=1.0, muon_momentum_end=0.95,
                  muon_momentum_warmdown=0.95)
    fields.update(overrides)
    return TrainRecipe(**fields)


def losses(folder: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def test_tiny_run_learns_and_saves_an_hf_model(tmp_path, corpus, tiny_tokenizer_dir):
    summary = run(recipe(tmp_path, corpus, tiny_tokenizer_dir, num_iterations=30, eval_every=10))
    out = tmp_path / "base"
    history = summary["history"]["val_bpb"]
    assert [s for s, _ in history] == [0, 10, 20, 30]
    assert history[-1][1] < history[0][1] - 0.5  # val bits per byte fall
    log = losses(out)
    assert len(log) == 30 and log[-1][1] < log[0][1]
    vals = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines() if '"val_bpb"' in line]
    assert [v["step"] for v in vals] == [0, 10, 20, 30] and all(v["val_ppl"] > 1 for v in vals)
    assert vals[-1]["val_ppl"] < vals[0]["val_ppl"]  # perplexity (same pass, same targets) falls with bpb
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    # nanochat: the tables are padded to a multiple of 64, the logits cover exactly the tokenizer's ids
    assert model.config.padded_vocab_size % 64 == 0 and model.config.vocab_size == len(tokenizer)
    assert model.config.eos_token_id == tokenizer.eos_token_id
    saved = (out / "recipe.yaml").read_text()
    assert "grad_accum_steps: 2" in saved and "num_iterations: 6" not in saved.split("derived")[1]
    report = json.loads((tmp_path / "report" / "base-train.json").read_text())["data"]
    assert report["steps"] == 30 and report["val_bpb"] == pytest.approx(history[-1][1])


def test_resume_gives_bitwise_identical_losses(tmp_path, corpus, tiny_tokenizer_dir):
    straight = tmp_path / "straight"
    run(recipe(straight, corpus, tiny_tokenizer_dir, model_config={"dropout": 0.1}))
    cut = tmp_path / "cut"
    first = run(recipe(cut, corpus, tiny_tokenizer_dir, model_config={"dropout": 0.1}, max_steps_per_run=4))
    assert not first["finished"] and (cut / "base" / "checkpoints" / "step_000004").is_dir()
    run(recipe(cut, corpus, tiny_tokenizer_dir, model_config={"dropout": 0.1}, resume_from="latest"))
    assert losses(cut / "base") == losses(straight / "base")  # exact, dropout RNG and data order included
    a = torch.load  # noqa: F841  (the weights too)
    from safetensors.torch import load_file

    wa, wb = load_file(straight / "base" / "model.safetensors"), load_file(cut / "base" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("clip", [{}, {"grad_clip_mode": "per_layer", "grad_clip": 0.001}],
                         ids=["global", "per_layer"])
def test_one_micro_batch_of_four_equals_four_accumulated_micro_batches(tmp_path, corpus, tiny_tokenizer_dir, clip):
    # per_layer at 0.001 clips both blocks at every step: clipping must see the whole accumulated gradient
    big = run(recipe(tmp_path / "big", corpus, tiny_tokenizer_dir, device_batch_size=4, total_batch_size=256,
                     num_iterations=3, eval_every=-1, **clip))
    small = run(recipe(tmp_path / "small", corpus, tiny_tokenizer_dir, device_batch_size=1, total_batch_size=256,
                       num_iterations=3, eval_every=-1, **clip))
    if clip:
        rows = [json.loads(line) for line in (tmp_path / "big" / "base" / "train_log.jsonl").read_text().splitlines()]
        norms = [r["grad_norms"] for r in rows if "loss" in r]
        assert len(norms) == 3 and all(n["layers.0"] > 0.001 and n["layers.1"] > 0.001 for n in norms)
    for (s1, l1), (s2, l2) in zip(losses(tmp_path / "big" / "base"), losses(tmp_path / "small" / "base")):
        assert s1 == s2 and l1 == pytest.approx(l2, rel=1e-4)  # bf16 Newton-Schulz amplifies sum order
    assert big["val_bpb"] == pytest.approx(small["val_bpb"], rel=1e-3)


def test_lookahead_changes_the_run_and_resumes_bitwise_exactly(tmp_path, corpus, tiny_tokenizer_dir):
    # with a step lr schedule and a Muon momentum warmdown, which the loop must apply as planned
    common = dict(eval_every=-1, num_iterations=8, lr_schedule="step", step_milestones=[0.5], step_factors=[0.25],
                  muon_momentum_warmdown=0.9)
    la = dict(lookahead_k=4, lookahead_alpha=0.5, **common)
    plain = run(recipe(tmp_path / "plain", corpus, tiny_tokenizer_dir, **common))
    rows = [json.loads(line) for line in (tmp_path / "plain" / "base" / "train_log.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]
    assert [r["lr_mult"] for r in rows] == [1.0] * 4 + [0.25] * 4
    assert rows[3]["muon_momentum"] == 0.95 and rows[-1]["muon_momentum"] == pytest.approx(0.95 - 0.05 * 3 / 4)
    straight = run(recipe(tmp_path / "straight", corpus, tiny_tokenizer_dir, **la))
    assert losses(tmp_path / "straight" / "base")[:4] == losses(tmp_path / "plain" / "base")[:4]  # same until a sync
    assert losses(tmp_path / "straight" / "base")[4:] != losses(tmp_path / "plain" / "base")[4:]
    assert straight["val_bpb"] != plain["val_bpb"]
    # cut mid-cycle (step 6 of k=4): the checkpoint must hold the slow weights of step 4
    run(recipe(tmp_path / "cut", corpus, tiny_tokenizer_dir, max_steps_per_run=6, **la))
    optim_state = torch.load(tmp_path / "cut" / "base" / "checkpoints" / "step_000006" / "trainer_state" /
                             "optimizer.pt", weights_only=True)
    assert sum("lookahead_slow" in s for s in optim_state["state"].values()) > 0
    run(recipe(tmp_path / "cut", corpus, tiny_tokenizer_dir, resume_from="latest", **la))
    assert losses(tmp_path / "cut" / "base") == losses(tmp_path / "straight" / "base")
    from safetensors.torch import load_file

    wa, wb = load_file(tmp_path / "straight" / "base" / "model.safetensors"), load_file(
        tmp_path / "cut" / "base" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, corpus, tiny_tokenizer_dir):
    run(recipe(tmp_path, corpus, tiny_tokenizer_dir, max_steps_per_run=2, eval_every=-1))
    ckpt = tmp_path / "base" / "checkpoints" / "step_000002"
    before = (ckpt / "model.safetensors").read_bytes()
    stage = prepare_stage(recipe(tmp_path, corpus, tiny_tokenizer_dir, resume_from="latest", eval_every=-1))
    with torch.no_grad():
        stage.accelerator.unwrap_model(stage.model).model.layers[0].mlp.up_proj.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss .* at step 2.*step_000002"):
        train(stage)
    assert (ckpt / "model.safetensors").read_bytes() == before  # untouched
    assert (tmp_path / "base" / "checkpoints" / "latest").read_text().strip() == "step_000002"


def test_skip_policy_skips_bad_steps_then_gives_up(tmp_path, corpus, tiny_tokenizer_dir):
    stage = prepare_stage(recipe(tmp_path, corpus, tiny_tokenizer_dir, nan_policy="skip", num_iterations=20,
                                 eval_every=-1))
    with torch.no_grad():
        stage.accelerator.unwrap_model(stage.model).lm_head.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="after 10 skipped steps"):
        train(stage)


def test_a_crash_during_save_leaves_the_previous_checkpoint_intact(tmp_path, corpus, tiny_tokenizer_dir,
                                                                   monkeypatch):
    run(recipe(tmp_path, corpus, tiny_tokenizer_dir, max_steps_per_run=2, eval_every=-1))
    stage = prepare_stage(recipe(tmp_path, corpus, tiny_tokenizer_dir, resume_from="latest", eval_every=-1))
    import hf_nanogpt.checkpointing as ckpt_mod

    def dying_save(folder, *args, **kwargs):
        (folder / "model.safetensors").write_bytes(b"half a file")  # what a kill mid-write leaves
        raise KeyboardInterrupt("killed during save")

    monkeypatch.setattr(ckpt_mod, "save_model_folder", dying_save)
    with pytest.raises(KeyboardInterrupt):
        stage.checkpointer.save(3, stage.model, stage.tokenizer, stage.optimizer, {}, {})
    root = tmp_path / "base" / "checkpoints"
    assert (root / "latest").read_text().strip() == "step_000002" and not (root / "step_000003").exists()
    monkeypatch.undo()
    # resuming from `latest` still works, and the next save cleans up the debris
    stage = prepare_stage(recipe(tmp_path, corpus, tiny_tokenizer_dir, resume_from="latest", eval_every=-1))
    assert stage.start_step == 2
    stage.checkpointer.save(3, stage.model, stage.tokenizer, stage.optimizer, {}, {})
    assert not list(root.glob("*.tmp-*")) and (root / "latest").read_text().strip() == "step_000003"


def test_retention_keeps_the_newest_checkpoints(tmp_path, corpus, tiny_tokenizer_dir):
    run(recipe(tmp_path, corpus, tiny_tokenizer_dir, num_iterations=7, save_every=2, keep_checkpoints=2,
               eval_every=-1))
    root = tmp_path / "base" / "checkpoints"
    assert sorted(p.name for p in root.glob("step_*")) == ["step_000004", "step_000006"]
    assert (tmp_path / "base" / "model.safetensors").exists()  # the final model is separate


def test_bad_inputs_fail_with_clear_messages(tmp_path, corpus, tiny_tokenizer_dir):
    with pytest.raises(ValueError, match=r"total_batch_size=300 is not a positive multiple of .* = 128"):
        prepare_stage(recipe(tmp_path, corpus, tiny_tokenizer_dir, total_batch_size=300))
    with pytest.raises(FileNotFoundError, match="no_such_corpus"):
        prepare_stage(recipe(tmp_path, corpus, tiny_tokenizer_dir, train_data=str(tmp_path / "no_such_corpus.txt")))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        prepare_stage(recipe(tmp_path / "fresh", corpus, tiny_tokenizer_dir, resume_from="latest"))
    with pytest.raises(ValueError, match=r"val_data is unset but train_data=.*\[:90%\]"):
        prepare_stage(recipe(tmp_path, corpus, tiny_tokenizer_dir, train_data=f"{corpus}[:90%]"))
    with pytest.raises(ValueError, match="NanoGPTConfig.num_key_value_heads"):
        prepare_stage(recipe(tmp_path, corpus, tiny_tokenizer_dir, n_kv_head=3))


@pytest.mark.slow
@pytest.mark.parametrize("arch", [[], pytest.param(
    ["--window_pattern=ML", '--model_config={"num_experts": 4, "mamba_head_dim": 16, "mamba_state_size": 8, '
     '"router_activation": "sigmoid", "moe_balancing": "bias"}'], marks=pytest.mark.slow)], ids=["dense", "moe_hybrid"])
def test_two_processes_match_one_process_with_accumulation(tmp_path, corpus, tiny_tokenizer_dir, arch):
    """accelerate launch --num_processes 2 (gloo, CPU) x micro-batch B == 1 process x 2 micro-batches of B
    (for MoE: expert loads summed over processes, so both runs move the balancing biases alike)."""
    common = [*arch, f"--tokenizer={tiny_tokenizer_dir}", f"--train_data={corpus}", "--depth=2", "--aspect_ratio=32",
              "--head_dim=32", "--max_seq_len=64", "--device_batch_size=2", "--total_batch_size=256",
              "--num_iterations=4", "--eval_every=2", "--eval_tokens=512", "--dtype=float32", "--seed=3",
              "--grad_clip_mode=per_layer", "--grad_clip=0.001"]  # clipping after the all-reduce, in both runs
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_NANOGPT_BASE_DIR": str(tmp_path)}
    two = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                          str(REPO / "scripts" / "pretrain.py"), *common, f"--output_dir={tmp_path / 'two'}"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-4000:]
    one = subprocess.run([sys.executable, str(REPO / "scripts" / "pretrain.py"), *common,
                          f"--output_dir={tmp_path / 'one'}"], env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-4000:]
    l2, l1 = losses(tmp_path / "two"), losses(tmp_path / "one")
    assert len(l1) == len(l2) == 4
    for (s1, a), (s2, b) in zip(l1, l2):
        assert s1 == s2 and a == pytest.approx(b, rel=1e-4, abs=1e-4)
    meta = (tmp_path / "two" / "recipe.yaml").read_text()
    assert "world_size: 2" in meta and "grad_accum_steps: 1" in meta


@pytest.mark.slow
def test_sft_full_and_lora_fine_tune_a_pretrained_model(tmp_path, corpus, tiny_tokenizer_dir):
    run(recipe(tmp_path, corpus, tiny_tokenizer_dir, num_iterations=4, eval_every=-1))
    mixture = [{"task": "arithmetic", "size": 200}]
    common = dict(init_from=str(tmp_path / "base"), mixture=mixture, val_mixture=[{"task": "arithmetic", "size": 16,
                                                                                 "seed": 99}],
                  num_iterations=6, eval_every=3, total_batch_size=-1, max_seq_len=64)
    full = run(recipe(tmp_path, corpus, tiny_tokenizer_dir, stage="sft", output_dir=str(tmp_path / "sft"), **common))
    assert full["finished"] and full["history"]["val_bpb"][-1][1] < full["history"]["val_bpb"][0][1]
    lora = run(recipe(tmp_path, corpus, tiny_tokenizer_dir, stage="sft", output_dir=str(tmp_path / "lora"),
                      lora_r=4, lora_lr=3e-3, **common))
    assert lora["finished"]
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "lora").eval()
    adapters = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "lora" / "adapter").eval()
    ids = torch.randint(0, 500, (1, 12))
    torch.testing.assert_close(merged(ids).logits, adapters(ids).logits, rtol=1e-4, atol=1e-4)


def test_tracker_core_and_samples_run_during_training(tmp_path, corpus, tiny_tokenizer_dir, shared_data, caplog):
    pytest.importorskip("tensorboard")
    import logging

    caplog.set_level(logging.INFO, logger="hf_nanogpt.training")
    summary = run(recipe(tmp_path, corpus, tiny_tokenizer_dir, num_iterations=2, eval_every=-1, tracker="tensorboard",
                         core_metric_every=2, core_metric_max_per_task=1, sample_every=1))
    assert summary["history"]["core"] and summary["history"]["core"][-1][0] == 2
    assert any("sample @1" in r.getMessage() for r in caplog.records)
    assert list((tmp_path / "base").glob("**/events.out.tfevents.*")), "tensorboard wrote no event file"


def test_num_epochs_sets_the_horizon_of_a_chat_stage(tmp_path, corpus, tiny_tokenizer_dir):
    run(recipe(tmp_path, corpus, tiny_tokenizer_dir, num_iterations=2, eval_every=-1))
    for packing, expected in (("pad", 40 // 2), ("pack", None)):
        stage = prepare_stage(recipe(tmp_path, corpus, tiny_tokenizer_dir, stage="sft",
                                     output_dir=str(tmp_path / f"sft-{packing}"), init_from=str(tmp_path / "base"),
                                     mixture=[{"task": "arithmetic", "size": 40}], sft_packing=packing,
                                     num_iterations=-1, num_epochs=2, total_batch_size=-1, dry_run=True))
        per_epoch = stage.train_loader.num_batches(0)
        assert stage.plan.horizon_source == "num_epochs" and stage.plan.num_iterations == 2 * per_epoch
        if expected is not None:
            assert per_epoch == expected  # padding: one row per conversation, 2 rows per micro-batch
        else:
            assert per_epoch < 40 // 2  # packing puts several conversations in a row


def test_build_model_config_builds_the_preset_family(tiny_tokenizer):
    from hf_nanogpt.training import build_model_config

    vocab = len(tiny_tokenizer)  # 1024: the nanochat presets pad their tables, the vocabulary stays exact
    master = build_model_config(TrainRecipe(depth=2, head_dim=64, max_seq_len=512), tiny_tokenizer)
    assert master.smear and master.value_embeddings and master.backout and master.qk_scale == 1.2
    assert master.vocab_size == vocab and master.window_pattern == "SSSL" and master.sliding_window == 129
    jan = build_model_config(TrainRecipe(depth=2, head_dim=64, max_seq_len=512, model_preset="nanochat_jan2026",
                                         window_pattern="SL"), tiny_tokenizer)
    assert not (jan.smear or jan.value_embeddings or jan.backout) and jan.rope_theta == 10000.0
    assert jan.sliding_window == 257 and jan.bos_token_id == tiny_tokenizer.bos_token_id
    gpt2 = build_model_config(TrainRecipe(depth=2, head_dim=64, model_preset="gpt2"), tiny_tokenizer)
    assert gpt2.position_embedding == "learned" and gpt2.vocab_size % 64 == 0 and gpt2.pad_vocab_size_to == 1


# ----------------------------------------------------------------------------- hostile input, at start


def test_nonsense_is_refused_at_start_naming_the_key(tmp_path, corpus, tiny_tokenizer_dir):
    with pytest.raises(ValueError, match=r"recipe keys max_seq_len=100000000 and device_batch_size=2: .* needs at least"):
        prepare_stage(recipe(tmp_path, corpus, tiny_tokenizer_dir, max_seq_len=10**8))  # before any allocation
    one_line = tmp_path / "one_line.txt"
    one_line.write_text("x = 1; " * 40 + "\n")  # its last 10% (validation) is far shorter than a row
    with pytest.raises(ValueError, match=r"recipe key val_data: the validation split \(the held-out part of "
                                         r"train_data=.*one_line.txt'\) does not fill one row of max_seq_len \+ 1 = 65"):
        prepare_stage(recipe(tmp_path, corpus, tiny_tokenizer_dir, train_data=str(one_line)))
    with pytest.raises(ValueError, match="unknown field 'droput'"):
        prepare_stage(recipe(tmp_path, corpus, tiny_tokenizer_dir, model_config={"droput": 0.1}))


def test_resume_cuts_the_log_back_to_the_checkpoint(tmp_path, corpus, tiny_tokenizer_dir):
    """A run killed at step 5 after its step-4 checkpoint had logged step 5 already; resuming from
    `latest` must not log step 5 twice: the log equals that of a run never interrupted."""
    straight = tmp_path / "straight"
    run(recipe(straight, corpus, tiny_tokenizer_dir, save_every=2, keep_checkpoints=3))
    killed = tmp_path / "killed"
    run(recipe(killed, corpus, tiny_tokenizer_dir, save_every=2, keep_checkpoints=3, max_steps_per_run=5))
    root = killed / "base" / "checkpoints"
    shutil.rmtree(root / "step_000005")  # the kill came before step 5 was saved ...
    (root / "latest").write_text("step_000004")
    assert [s for s, _ in losses(killed / "base")] == [1, 2, 3, 4, 5]  # ... but after it was logged
    run(recipe(killed, corpus, tiny_tokenizer_dir, save_every=2, keep_checkpoints=3, resume_from="latest"))

    def rows(folder):
        keep = ("step", "loss", "val_bpb", "lr_mult")
        return [{k: r[k] for k in keep if k in r} for r in map(json.loads, (folder / "train_log.jsonl").open())]

    assert rows(killed / "base") == rows(straight / "base")


def test_latest_always_names_a_complete_checkpoint(tmp_path, corpus, tiny_tokenizer_dir):
    stage = prepare_stage(recipe(tmp_path, corpus, tiny_tokenizer_dir, eval_every=-1))
    stage.checkpointer.keep = 0
    with pytest.raises(ValueError, match="keep_checkpoints=0: at least 1 checkpoint must be kept"):
        stage.checkpointer.save(1, stage.model, stage.tokenizer, stage.optimizer, {}, {})
    stage.checkpointer.keep = 1
    for step in (1, 2):
        stage.checkpointer.save(step, stage.model, stage.tokenizer, stage.optimizer, {}, {})
    root = tmp_path / "base" / "checkpoints"
    assert sorted(p.name for p in root.glob("step_*")) == ["step_000002"]
    assert stage.checkpointer.resolve("latest") == root / "step_000002"
    (root / "latest").write_text("step_000002")  # a resume from an older checkpoint re-saves it ...
    stage.checkpointer.save(1, stage.model, stage.tokenizer, stage.optimizer, {}, {})
    assert (root / "latest").read_text() == "step_000001" and (root / "step_000001").is_dir()  # ... and keeps it


def test_moe_hybrid_resumes_bitwise_and_logs_expert_load(tmp_path, corpus, tiny_tokenizer_dir):
    """A Mamba-2 + attention model with bias-balanced MoE MLPs: the router biases (buffers, moved after each
    step) and the SSM parameters resume exactly; the log carries the per-layer expert load."""
    arch = dict(window_pattern="ML", model_config={"num_experts": 4, "num_shared_experts": 1, "mamba_head_dim": 16,
                                                   "mamba_state_size": 8, "router_activation": "sigmoid",
                                                   "moe_balancing": "bias", "router_aux_loss_coef": 0.0})
    straight = tmp_path / "straight"
    run(recipe(straight, corpus, tiny_tokenizer_dir, **arch))
    cut = tmp_path / "cut"
    run(recipe(cut, corpus, tiny_tokenizer_dir, max_steps_per_run=4, **arch))
    run(recipe(cut, corpus, tiny_tokenizer_dir, resume_from="latest", **arch))
    assert losses(cut / "base") == losses(straight / "base")
    from safetensors.torch import load_file

    wa, wb = load_file(straight / "base" / "model.safetensors"), load_file(cut / "base" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert wa["model.layers.0.mlp.router.expert_bias"].abs().sum() > 0  # the balancing moved it
    rows = [json.loads(line) for line in (straight / "base" / "train_log.jsonl").read_text().splitlines()]
    loads = [r["moe_load_max_over_mean"] for r in rows if "moe_load_max_over_mean" in r]
    assert loads and all(len(v) == 2 and all(x >= 1.0 for x in v) for v in loads)


def test_bf16_autocast_on_cpu_trains_and_auto_follows_the_hardware(tmp_path, corpus, tiny_tokenizer_dir):
    """`dtype: bfloat16` trains on a CPU (attention in fp32, MFU against a bf16 matmul peak); `dtype: auto` is bf16
    exactly where the CPU multiplies bf16 natively; `muon_ns_dtype` reaches the optimizer."""
    from hf_nanogpt.optim import cpu_has_bf16_matmul
    from hf_nanogpt.training import auto_mixed_precision, mixed_precision

    # its own process: accelerate keeps one mixed-precision setting per process (the other tests run fp32)
    out = tmp_path / "bf16"
    args = [f"--{k}={v}" for k, v in dict(tokenizer=tiny_tokenizer_dir, train_data=corpus, output_dir=out, depth=2,
                                          aspect_ratio=32, head_dim=32, max_seq_len=64, device_batch_size=4,
                                          total_batch_size=256, num_iterations=12, eval_every=6, eval_tokens=512,
                                          save_every=-1, dtype="bfloat16", seed=7).items()]
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "pretrain.py"), str(REPO / "recipes" / "tiny.yaml"),
                           *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "GFLOP/s measured bf16 matmul" in proc.stderr
    vals = [json.loads(line)["val_bpb"] for line in (out / "train_log.jsonl").read_text().splitlines()
            if '"val_bpb"' in line]
    assert len(vals) == 3 and vals[-1] < vals[0] - 0.3
    if not torch.cuda.is_available():
        assert auto_mixed_precision() == ("bf16" if cpu_has_bf16_matmul() else "no")
        assert mixed_precision(recipe(tmp_path, corpus, tiny_tokenizer_dir, dtype="auto")) == auto_mixed_precision()
    assert mixed_precision(recipe(tmp_path, corpus, tiny_tokenizer_dir, dtype="bfloat16")) == "bf16"
    for ns, expected in (("float32", torch.float32), ("bfloat16", torch.bfloat16), ("auto", None)):
        stage = prepare_stage(recipe(tmp_path / ns, corpus, tiny_tokenizer_dir, muon_ns_dtype=ns))
        assert stage.optimizer.optimizer.ns_dtype == expected  # accelerate wraps the MuonAdamW
