"""Two processes (gloo) give the same CORE, bits per byte and chat results as one process."""

import json
import socket

import pytest
import torch
import torch.multiprocessing as mp

from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM

CORE_TASKS = ["copa", "winograd", "lambada_openai"]


def _batches(tokenizer, n=4, B=2, T=32):
    from hf_nanogpt.data.corpus import iter_stdlib_texts

    ids = tokenizer(next(iter(iter_stdlib_texts("val")))[:20000])["input_ids"]
    rows = torch.tensor(ids[: n * B * (T + 1)]).view(n, B, T + 1)
    return [{"input_ids": r[:, :-1], "shift_labels": r[:, 1:]} for r in rows]


def _evaluate(model_dir, bundle, rank=0, world=1):
    from hf_nanogpt.evaluation.bpb import evaluate_bpb
    from hf_nanogpt.evaluation.chat import evaluate_chat
    from hf_nanogpt.evaluation.core import evaluate_core
    from hf_nanogpt.paths import load_model_and_tokenizer
    from hf_nanogpt.tokenization import token_bytes

    model, tok = load_model_and_tokenizer(model_dir)
    core = evaluate_core(model, tok, bundle, max_per_task=5, tasks=CORE_TASKS)
    bpb = evaluate_bpb(model, _batches(tok)[rank::world], token_bytes(tok))
    chat = evaluate_chat(model, tok, ["ARC-Easy", "GSM8K"], max_problems=3, max_new_tokens=4)
    return {"core": core["core"], "accuracy": core["accuracy"], "num_examples": core["num_examples"], "bpb": bpb,
            "chat": {t: e["accuracy"] for t, e in chat["tasks"].items()}, "chatcore": chat["ChatCORE"]}


def _worker(rank, world, port, model_dir, bundle, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        result = _evaluate(model_dir, bundle, rank, world)
        (out_dir / f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, tiny_tokenizer, shared_data):
    torch.manual_seed(0)
    model = NanoGPTForCausalLM(NanoGPTConfig(vocab_size=len(tiny_tokenizer), hidden_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, max_position_embeddings=256,
                                             bos_token_id=tiny_tokenizer.bos_token_id,
                                             eos_token_id=tiny_tokenizer.eos_token_id))
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    bundle = shared_data / "eval_bundle"
    single = _evaluate(model_dir, bundle)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, model_dir, bundle, tmp_path), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1], "every rank must end with the same gathered result"
    got = ranks[0]
    assert got["num_examples"] == single["num_examples"] == {t: 5 for t in CORE_TASKS}
    assert got["accuracy"] == single["accuracy"] and got["core"] == pytest.approx(single["core"])
    assert got["bpb"] == pytest.approx(single["bpb"], rel=1e-6)
    assert got["chat"] == single["chat"] and got["chatcore"] == pytest.approx(single["chatcore"])
