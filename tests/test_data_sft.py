"""SFT batching: assistant-only targets, pad and pack modes, sharding, exact resume, no NaN."""

import json

import pytest
import torch

from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM
from hf_nanogpt.data import build_sft_loader
from hf_nanogpt.tokenization import render_conversation


def conversations(n=30):
    convs = []
    for i in range(n):
        answer = [{"type": "python", "text": f"{i} * 3"}, {"type": "output", "text": str(3 * i)},
                  {"type": "text", "text": f"#### {3 * i}"}] if i % 3 == 0 else "word " * (1 + i % 7)
        convs.append({"messages": [{"role": "user", "content": f"question {i}" + " please" * (i % 5)},
                                   {"role": "assistant", "content": answer}]})
    return convs


def rows_of(batch):
    """(ids, targets) per row, trimmed to the attended positions."""
    out = []
    for ids, labels, att in zip(batch["input_ids"], batch["shift_labels"], batch["attention_mask"]):
        n = int(att.sum())
        assert att[:n].all() and not att[n:].any()  # right padding only
        assert (labels[n:] == -100).all()
        out.append((ids[:n].tolist(), labels[:n].tolist()))
    return out


def test_pad_mode_targets_are_the_assistant_tokens(tiny_tokenizer):
    convs = conversations()
    loader = build_sft_loader(convs, tiny_tokenizer, batch_size=4, seq_len=64, mode="pad", epochs=1)
    rendered = [render_conversation(tiny_tokenizer, c["messages"], max_tokens=65) for c in convs]
    seen = set()
    for batch in loader:
        assert batch["input_ids"].shape[1] <= 64
        assert int(batch["num_items_in_batch"]) == max(int((batch["shift_labels"] != -100).sum()), 1)
        for ids, labels in rows_of(batch):
            [index] = [i for i, (full, _) in enumerate(rendered) if full[:len(ids)] == ids]
            full, mask = rendered[index]
            # the next token exactly where the renderer's mask is 1, -100 elsewhere and after the end
            expected = [full[p + 1] if p + 1 < len(full) and mask[p + 1] else -100 for p in range(len(ids))]
            assert labels == expected
            seen.add(index)
    assert seen == set(range(len(convs))) and loader.num_batches() == 8


def test_pack_mode_rows_are_full_length_and_bos_aligned(tiny_tokenizer):
    convs = conversations()
    loader = build_sft_loader(convs, tiny_tokenizer, batch_size=2, seq_len=96, mode="pack", epochs=1)
    bos, total_targets, batches = tiny_tokenizer.bos_token_id, 0, 0
    for batch in loader:
        batches += 1
        assert batch["input_ids"].shape == (batch["input_ids"].shape[0], 96)
        assert (batch["input_ids"][:, 0] == bos).all()
        total_targets += int((batch["shift_labels"] != -100).sum())
        rows_of(batch)
    expected = sum(sum(render_conversation(tiny_tokenizer, c["messages"])[1][1:]) for c in convs)
    assert total_targets == expected  # every supervised token of the epoch, once (nothing cropped)
    assert batches == loader.num_batches() < 15  # packing: fewer rows than conversations
    assert 0 <= loader.stats["padded_fraction"] < 0.5


def test_ranks_share_nothing_and_run_equal_steps(tiny_tokenizer):
    convs = conversations(31)
    for mode in ("pad", "pack"):
        parts = [list(build_sft_loader(convs, tiny_tokenizer, 2, 64, rank=r, world_size=2, mode=mode, epochs=1))
                 for r in range(2)]
        assert len(parts[0]) == len(parts[1]) > 0
        bos = tiny_tokenizer.bos_token_id
        convs_seen = []
        for p in parts:  # the conversations of each rank: its rows cut at BOS
            text = [tiny_tokenizer.decode(row[0]) for b in p for row in rows_of(b)]
            convs_seen.append({c for t in text for c in t.split(tiny_tokenizer.decode([bos])) if c})
        assert convs_seen[0] and convs_seen[1] and not convs_seen[0] & convs_seen[1]
        if mode == "pad":  # at most W-1 conversations (pack: rows) are left out of an epoch
            assert len(convs_seen[0]) + len(convs_seen[1]) == len(convs) - 1


def test_exact_resume(tiny_tokenizer):
    convs = conversations()
    for mode in ("pad", "pack"):
        make = lambda: build_sft_loader(convs, tiny_tokenizer, 3, 48, mode=mode, epochs=3)  # noqa: E731
        reference = [b["input_ids"] for b in make()]
        for cut in (1, len(reference) // 2, len(reference) - 1):
            first, it = make(), None
            it = iter(first)
            for _ in range(cut):
                next(it)
            resumed = make()
            resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
            tail = [b["input_ids"] for b in resumed]
            assert len(tail) == len(reference) - cut
            assert all(torch.equal(a, b) for a, b in zip(reference[cut:], tail)), (mode, cut)


def test_micro_batch_without_targets_gives_no_nan(tiny_tokenizer):
    # the answer is cut off by seq_len: no supervised target at all in this micro-batch
    long_question = [{"messages": [{"role": "user", "content": "tell me " * 40},
                                   {"role": "assistant", "content": "ok"}]}]
    batch = next(iter(build_sft_loader(long_question, tiny_tokenizer, 1, 16, epochs=1)))
    assert (batch["shift_labels"] == -100).all() and int(batch["num_items_in_batch"]) == 1
    model = NanoGPTForCausalLM(NanoGPTConfig(vocab_size=len(tiny_tokenizer), hidden_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, max_position_embeddings=256))
    assert torch.isnan(model(input_ids=batch["input_ids"], shift_labels=batch["shift_labels"]).loss)  # the trap
    loss = model(**batch).loss
    loss.backward()
    assert loss.item() == 0.0 and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_bad_input(tiny_tokenizer):
    with pytest.raises(ValueError, match="conversation 1: message 1: role user out of order"):
        build_sft_loader([{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
                          {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}],
                         tiny_tokenizer, 2, 32)
    with pytest.raises(ValueError, match="SFT mode 'stack' is invalid"):
        build_sft_loader(conversations(2), tiny_tokenizer, 2, 32, mode="stack")
