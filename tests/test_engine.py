"""The generation engine: tested with a scripted mock model (HF causal-LM contract, KV cache
included) and against `generate()` of a real tiny NanoGPTForCausalLM."""

import pytest
import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM
from hf_nanogpt.engine import ChatTokens, Engine, sample_next_token

# A character-level toy vocabulary: six special ids, then one id per character.
SPECIALS = ["<|bos|>", "<|assistant_end|>", "<|python_start|>", "<|python_end|>", "<|output_start|>", "<|output_end|>"]
CHARS = "0123456789+-*/%.() '\"_abcdefghijklmnopqrstuvwxyz"
VOCAB = len(SPECIALS) + len(CHARS)
BOS, END, PY_START, PY_END, OUT_START, OUT_END = range(6)
TOKENS = ChatTokens(assistant_end=END, bos=BOS, python_start=PY_START, python_end=PY_END,
                    output_start=OUT_START, output_end=OUT_END)


def encode(text: str) -> list[int]:
    return [len(SPECIALS) + CHARS.index(c) for c in text]


def decode(ids: list[int]) -> str:
    return "".join(CHARS[i - len(SPECIALS)] if i >= len(SPECIALS) else SPECIALS[i] for i in ids)


class ScriptedLM(nn.Module):
    """A causal LM whose next-token logits are a function `rule(history)` of the whole history.

    It reads the history back *from the KV cache* (the token ids are stored as keys), so a cache
    that lost, duplicated or mixed up rows makes the rule see the wrong history. `rule` returns a
    token id (a clear argmax) or a list of ids (equal logits: a uniform choice when sampling).
    """

    def __init__(self, rule, vocab_size: int = VOCAB):
        super().__init__()
        self.rule = rule
        self.vocab_size = vocab_size
        self.dummy = nn.Parameter(torch.zeros(1))  # gives the engine a device
        self.calls: list[tuple[int, int]] = []  # (batch, length) of every forward

    def forward(self, input_ids, past_key_values=None, use_cache=None, **kwargs):
        self.calls.append(tuple(input_ids.shape))
        ids = input_ids.float()[:, None, :, None]  # (B, 1, T, 1): one "head" holding the ids
        if past_key_values is not None:
            keys, _ = past_key_values.update(ids, ids, 0)
            history = keys[:, 0, :, 0].long()  # (B, S): everything seen so far
        else:
            history = input_ids
        bsz, seq = input_ids.shape
        offset = history.shape[1] - seq
        logits = torch.full((bsz, seq, self.vocab_size), -10.0)
        for b in range(bsz):
            for t in range(seq):
                choice = self.rule(history[b, : offset + t + 1].tolist())
                logits[b, t, choice if isinstance(choice, list) else [choice]] = 10.0
        return CausalLMOutputWithPast(logits=logits, past_key_values=past_key_values)


def scripted(text_after_prompt: str, prompt_len: int):
    """A rule that spells out a fixed continuation (as char ids), then ends."""
    script = encode(text_after_prompt)

    def rule(history):
        k = len(history) - prompt_len
        return script[k] if k < len(script) else END

    return rule


def test_greedy_follows_the_model_and_stops_at_assistant_end():
    prompt = [BOS] + encode("hi")
    model = ScriptedLM(scripted("hello", len(prompt)))
    engine = Engine(model, TOKENS, encode, decode)
    steps = list(engine.generate(prompt, temperature=0.0, max_tokens=50))
    assert [col[0] for col, _ in steps] == encode("hello") + [END]  # the stop token is reported
    assert [m[0] for _, m in steps] == [1] * 6
    results, masks = engine.generate_batch(prompt, temperature=0.0, max_tokens=50)
    assert results == [encode("hello")] and masks == [[1] * 5]  # ... and not kept
    # one prefill of the whole prompt, then one token per step
    assert model.calls[:2] == [(1, len(prompt)), (1, 1)]


def test_bos_also_stops_a_row():
    prompt = [BOS, *encode("a")]
    engine = Engine(ScriptedLM(lambda h: BOS if len(h) > 3 else encode("x")[0]), TOKENS)
    assert engine.generate_batch(prompt, temperature=0.0)[0] == [encode("xx")]


def test_token_budget_and_context_limit():
    prompt = [BOS, *encode("ab")]
    forever = ScriptedLM(lambda h: encode("z")[0])
    assert engine_len(Engine(forever, TOKENS), prompt, max_tokens=7) == 7
    assert engine_len(Engine(forever, TOKENS), prompt, max_tokens=0) == 0
    # context 10 with a 3-token prompt: 7 tokens fed back + the last one never fed = 8 tokens
    engine = Engine(forever, TOKENS, max_context=10)
    assert engine_len(engine, prompt, max_tokens=None) == 8
    assert max(t for _, t in forever.calls) == 3 and sum(t for _, t in forever.calls[-7:]) == 7
    with pytest.raises(ValueError, match="prompt has 10 tokens; the context holds 10"):
        list(engine.generate([BOS] * 10))
    with pytest.raises(ValueError, match="prompt is empty"):
        list(engine.generate([]))
    with pytest.raises(ValueError, match="num_samples"):
        list(engine.generate(prompt, num_samples=0))


def engine_len(engine, prompt, **kwargs) -> int:
    return len(engine.generate_batch(prompt, temperature=0.0, **kwargs)[0][0])


def tool_rule(expr: str, prompt_len: int, after: str = "ok"):
    """Writes <|python_start|>expr<|python_end|>, then emits 'q' (which the engine must override
    with the forced tool output) until it sees <|output_end|>, then writes `after` and ends."""
    head = [PY_START, *encode(expr), PY_END]

    def rule(history):
        gen = history[prompt_len:]
        if len(gen) < len(head):
            return head[len(gen)]
        if OUT_END in gen:
            k = len(gen) - gen.index(OUT_END) - 1
            return encode(after)[k] if k < len(after) else END
        if len(gen) > len(head) + 10:  # no tool output came: end
            return END
        return encode("q")[0]

    return rule


def test_tool_call_forces_the_calculator_output():
    prompt = [BOS, *encode("sum")]
    engine = Engine(ScriptedLM(tool_rule("12*3+1", len(prompt))), TOKENS, encode, decode)
    forced_seen = []
    (tokens,), (masks,) = engine.generate_batch(prompt, temperature=0.0, max_tokens=40,
                                                on_token=lambda r, t, f: forced_seen.append(f))
    head = [PY_START, *encode("12*3+1"), PY_END]
    out = [OUT_START, *encode("37"), OUT_END]
    assert tokens == head + out + encode("ok")
    assert masks == [1] * len(head) + [0] * len(out) + [1, 1]
    assert forced_seen == [m == 0 for m in masks] + [False]  # + the stop token


def test_string_count_tool_and_refused_expression():
    prompt = [BOS]
    engine = Engine(ScriptedLM(tool_rule("'strawberry'.count('r')", 1)), TOKENS, encode, decode)
    (tokens,), _ = engine.generate_batch(prompt, temperature=0.0, max_tokens=60)
    assert decode(tokens).endswith("<|python_end|><|output_start|>3<|output_end|>ok")
    # a refused expression forces nothing: the model's own tokens continue
    engine = Engine(ScriptedLM(tool_rule("(1).__class__", 1)), TOKENS, encode, decode)
    (tokens,), (masks,) = engine.generate_batch(prompt, temperature=0.0, max_tokens=60)
    assert OUT_START not in tokens and set(masks) == {1}
    # without encode/decode there is no tool use at all
    engine = Engine(ScriptedLM(tool_rule("1+1", 1)), TOKENS)
    assert OUT_START not in engine.generate_batch(prompt, temperature=0.0, max_tokens=60)[0][0]


def test_fan_out_shares_the_prefill_and_rows_finish_independently():
    """Rows take random steps of +1 or +2 from the previous id and end past a threshold, so they
    finish at different times; the rule checks its history from the cache, so a misaligned cache
    after rows leave the batch would break the +1/+2 invariant."""
    lo, hi = len(SPECIALS), len(SPECIALS) + 30

    def rule(history):
        last = history[-1]
        return END if last >= hi else [last + 1, last + 2]

    model = ScriptedLM(rule, vocab_size=VOCAB + 40)
    engine = Engine(model, TOKENS)
    prompt = [BOS, lo, lo + 1]
    results, masks = engine.generate_batch(prompt, num_samples=8, temperature=1.0, seed=0, max_tokens=100)
    assert model.calls[0] == (1, len(prompt))  # one prefill, batch 1
    assert all(length == 1 for _, length in model.calls[1:])
    batch_sizes = [b for b, _ in model.calls[1:]]
    assert batch_sizes[0] == 8 and batch_sizes == sorted(batch_sizes, reverse=True) and batch_sizes[-1] < 8
    for row in results:
        seq = prompt[1:] + row
        assert all(b - a in (1, 2) for a, b in zip(seq, seq[1:])), seq
        assert hi <= seq[-1] <= hi + 1
    assert len({tuple(r) for r in results}) > 1  # the samples really differ
    # the same seed reproduces the same samples
    assert engine.generate_batch(prompt, num_samples=8, temperature=1.0, seed=0, max_tokens=100)[0] == results


def test_stopping_iteration_stops_the_work():
    model = ScriptedLM(lambda h: encode("z")[0])
    gen = Engine(model, TOKENS).generate([BOS], temperature=0.0, max_tokens=1000)
    for _ in zip(range(5), gen):
        pass
    gen.close()
    assert len(model.calls) == 5  # prefill + 4 decode steps; nothing ran ahead


def test_sample_next_token():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 0.0, 0.0]])
    assert sample_next_token(logits, temperature=0.0).tolist() == [1, 0]
    gen = torch.Generator().manual_seed(0)
    assert sample_next_token(logits, top_k=1, generator=gen).tolist() == [1, 0]
    draws = torch.stack([sample_next_token(logits, top_k=2, generator=gen) for _ in range(300)])
    assert set(draws[:, 0].tolist()) == {1, 3}
    # probabilities (0.5, 0.3, 0.2): top_p=0.7 keeps the first two, top_p=0.5 only the first
    probs = torch.tensor([[0.5, 0.3, 0.2]]).log()
    assert set(torch.cat([sample_next_token(probs, top_p=0.7, generator=gen) for _ in range(300)]).tolist()) == {0, 1}
    assert set(torch.cat([sample_next_token(probs, top_p=0.5, generator=gen) for _ in range(50)]).tolist()) == {0}
    for bad, msg in [(dict(temperature=-1), "temperature"), (dict(top_k=0), "top_k"), (dict(top_p=0.0), "top_p")]:
        with pytest.raises(ValueError, match=msg):
            sample_next_token(logits, **bad)


def test_tiny_temperatures_sample_the_argmax_instead_of_nan():
    """Found by the server fuzz test: 1e-300 rounds to 0 in float32 (0/0 = NaN) and 1e-38 overflows
    logits / temperature to inf; both now sample the most likely token."""
    logits = torch.tensor([[0.0, 30.0, 1.0, 2.0], [5.0, 0.0, -40.0, 0.0]])
    gen = torch.Generator().manual_seed(0)
    for temperature in (5e-324, 1e-300, 1e-45, 1.2e-38, 1e-20):
        for top_k, top_p in ((None, None), (2, None), (None, 0.5)):
            assert sample_next_token(logits, temperature, top_k, top_p, gen).tolist() == [1, 0], temperature


def test_chat_tokens_from_tokenizer():
    class FakeTokenizer:
        unk_token_id = 99
        vocab = {name: i for i, name in enumerate(SPECIALS)}

        def convert_tokens_to_ids(self, name):
            return self.vocab.get(name, 99)

    assert ChatTokens.from_tokenizer(FakeTokenizer()) == TOKENS
    partial = FakeTokenizer()
    partial.vocab = {"<|assistant_end|>": 3}
    assert ChatTokens.from_tokenizer(partial) == ChatTokens(assistant_end=3)
    assert not ChatTokens(assistant_end=3).has_tools
    partial.vocab = {}
    with pytest.raises(ValueError, match="no <\\|assistant_end\\|> token"):
        ChatTokens.from_tokenizer(partial)


# ----------------------------------------------------------------------------- real model


def tiny_model(seed: int = 0, **overrides) -> NanoGPTForCausalLM:
    torch.manual_seed(seed)
    config = NanoGPTConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           max_position_embeddings=256, **overrides)
    model = NanoGPTForCausalLM(config).eval()
    with torch.no_grad():  # nanochat init zeroes residual projections: randomise for varied logits
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


# the last one: nanochat master's smear (state in the cache), value embeddings, backout, padded vocabulary
@pytest.mark.parametrize("overrides", [{}, {"window_pattern": "SL", "sliding_window": 6},
                                       {"window_pattern": "SL", "sliding_window": 6, "smear": True, "backout": True,
                                        "value_embeddings": True, "pad_vocab_size_to": 64, "qk_scale": 1.2}])
def test_greedy_matches_model_generate(overrides):
    model = tiny_model(**overrides)
    # Stop ids outside the vocabulary: both sides must produce all 30 tokens, nothing ends early.
    engine = Engine(model, ChatTokens(assistant_end=VOCAB))
    for prompt in ([BOS, *encode("hello world")], [BOS, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]):
        ours = engine.generate_batch(prompt, temperature=0.0, max_tokens=30)[0][0]
        ids = torch.tensor([prompt])
        theirs = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=30,
                                eos_token_id=None, pad_token_id=END)[0, len(prompt):].tolist()
        assert len(ours) == 30 and len(set(ours)) > 3, "a degenerate model would make this comparison weak"
        assert ours == theirs


@pytest.mark.parametrize("overrides", [{}, {"smear": True}])
def test_real_model_samples_share_the_prefill(overrides):
    model = tiny_model(seed=1, **overrides)
    engine = Engine(model, ChatTokens(assistant_end=VOCAB))
    calls = []
    model.register_forward_pre_hook(lambda m, args, kwargs: calls.append(tuple(kwargs["input_ids"].shape)),
                                    with_kwargs=True)
    prompt = [BOS, *encode("abc")]
    single = engine.generate_batch(prompt, temperature=0.0, max_tokens=12)[0][0]
    calls.clear()
    greedy_rows = engine.generate_batch(prompt, num_samples=4, temperature=0.0, max_tokens=12)[0]
    assert greedy_rows == [single] * 4  # the fanned-out cache is exactly the shared prefill
    assert len(single) == 12 and calls[0] == (1, len(prompt)) and calls[1:] == [(4, 1)] * 11
    sampled = engine.generate_batch(prompt, num_samples=4, temperature=1.0, seed=3, max_tokens=12)[0]
    assert len({tuple(r) for r in sampled}) > 1


def test_generate_benchmark_runs_and_checks_parity(capsys):
    from hf_nanogpt.benchmarks import generate as bench

    results = bench.main(["--depth", "1", "--head_dim", "32", "--vocab_size", "512", "--context", "64",
                          "--prompt_tokens", "8", "--new_tokens", "6", "--samples", "2", "--repeats", "1"])
    assert results["same_tokens"]
    assert set(results["times"]) == {"engine", "generate", "llama", "engine_batch", "generate_batch"}
    assert abs(results["params"]["llama"] - results["params"]["nano"]) / results["params"]["nano"] < 0.02
    out = capsys.readouterr().out
    assert "Llama `generate()` (matched)" in out and "identical (Engine vs `generate()`): yes" in out
    with pytest.raises(SystemExit):
        bench.main(["--context", "16", "--prompt_tokens", "10", "--new_tokens", "10"])
