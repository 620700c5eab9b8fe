"""Batched, KV-cached generation with tool use, for any transformers causal LM.

The engine knows nothing about text: it is given token ids (the prompt and the special ids in
`ChatTokens`) and, only for the calculator tool, an `encode`/`decode` pair. What it does:

- prefill: the prompt runs through the model once, filling a transformers `DynamicCache`
  (`DynamicCache(config=model.config)`, so sliding-window layers get sliding cache layers);
- fan-out: the cache is repeated to `num_samples` rows (`Cache.batch_repeat_interleave`), so all
  samples share one prefill; rows that finish are dropped from the cache (`batch_select_indices`)
  and the remaining rows keep decoding without padding;
- sampling: greedy (`temperature=0`), temperature, top-k and top-p (nucleus), seeded;
- stopping: at `<|assistant_end|>` or `<|bos|>` (the stop token is reported, then the row ends), at
  `max_tokens` new tokens, or when the context (`max_position_embeddings`) is full;
- tool use (nanochat's calculator): tokens between `<|python_start|>` and `<|python_end|>` are decoded
  and evaluated by `hf_nanogpt.calculator.use_calculator`; a result is forced into the stream as
  `<|output_start|> result <|output_end|>`. Forced tokens have mask 0, sampled tokens mask 1 (the
  mask tells RL / evaluation code which tokens the model chose).

`Engine.generate` is a generator yielding one column per decoding step (stop iterating to cancel:
the server does that when a client disconnects); `Engine.generate_batch` collects the rows and can
call a per-token callback. Model calls follow the Hugging Face contract only:
`model(input_ids=..., cache=cache, use_cache=True[, logits_to_keep=1]).logits`, with the cache keyword the
model's `forward` names (`cache` from transformers 5.24, `past_key_values` before).
"""

import inspect
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from transformers.cache_utils import DynamicCache

from .calculator import use_calculator
from .compat_nanogpt import model_cache_keyword

# Name of each special token the engine may use, as written in the tokenizer's vocabulary.
SPECIAL_TOKEN_NAMES = {
    "bos": "<|bos|>",
    "assistant_end": "<|assistant_end|>",
    "python_start": "<|python_start|>",
    "python_end": "<|python_end|>",
    "output_start": "<|output_start|>",
    "output_end": "<|output_end|>",
}


@dataclass(frozen=True)
class ChatTokens:
    """The special token ids generation needs. `assistant_end` (and `bos`, when set) stop a row; the
    four tool ids enable the calculator (all four must be set for tool use)."""

    assistant_end: int
    bos: int | None = None
    python_start: int | None = None
    python_end: int | None = None
    output_start: int | None = None
    output_end: int | None = None

    @property
    def stop_ids(self) -> frozenset[int]:
        return frozenset(i for i in (self.assistant_end, self.bos) if i is not None)

    @property
    def has_tools(self) -> bool:
        return None not in (self.python_start, self.python_end, self.output_start, self.output_end)

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "ChatTokens":
        """Look the ids up with `tokenizer.convert_tokens_to_ids`; tokens the vocabulary lacks become
        None, except `<|assistant_end|>`, which is required."""
        ids = {}
        unk = getattr(tokenizer, "unk_token_id", None)
        for key, name in SPECIAL_TOKEN_NAMES.items():
            token_id = tokenizer.convert_tokens_to_ids(name)
            ids[key] = None if token_id is None or token_id == unk else int(token_id)
        if ids["assistant_end"] is None:
            name = SPECIAL_TOKEN_NAMES["assistant_end"]
            raise ValueError(f"tokenizer has no {name} token: it is not a chat tokenizer")
        return cls(**ids)


@dataclass
class _Row:
    """Decoding state of one sample."""

    tokens: list[int] = field(default_factory=list)  # generated ids, stop token included
    masks: list[int] = field(default_factory=list)  # 1 = sampled, 0 = forced
    forced: deque = field(default_factory=deque)  # ids to emit next instead of sampling
    expr: list[int] | None = None  # ids inside an open <|python_start|> block
    done: bool = False


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token per row from logits (B, V); returns ids (B,).

    `temperature=0` is greedy (argmax). `top_k` keeps the k largest logits; `top_p` keeps the
    smallest set of tokens whose probability reaches p (the most likely token is always kept).
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}")
    logits = logits.float()
    if temperature < torch.finfo(torch.float32).tiny:  # 0, or so small it would round to 0 in float32: greedy
        return logits.argmax(dim=-1)
    # shift so the largest logit is 0 before dividing: a tiny temperature (1e-300) then sends the others
    # to -inf instead of the maximum to +inf (inf - inf would make the softmax NaN)
    logits = (logits - logits.max(dim=-1, keepdim=True).values) / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens ranked before it already reach top_p.
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p  # (B, V), never the first column
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


class Engine:
    """Generation over a causal LM's KV cache, with the calculator tool.

    Args:
        model: any transformers-style causal LM (`model(input_ids, cache | past_key_values, use_cache)` ->
            output with `.logits` (B, T, V)); used in eval mode, never modified.
        tokens: the special ids (`ChatTokens.from_tokenizer(tok)` builds them).
        encode / decode: text <-> ids, used only to read a tool expression and write its result;
            without them tool use is off.
        tool: `str -> str | None` evaluating an expression (default: the safe calculator).
        max_context: longest prompt + generation; defaults to `model.config.max_position_embeddings`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokens: ChatTokens,
        encode: Callable[[str], list[int]] | None = None,
        decode: Callable[[list[int]], str] | None = None,
        tool: Callable[[str], str | None] = use_calculator,
        max_context: int | None = None,
    ):
        self.model = model
        self.tokens = tokens
        self.encode, self.decode, self.tool = encode, decode, tool
        config = getattr(model, "config", None)
        self.max_context = max_context or getattr(config, "max_position_embeddings", None)
        self.tools_enabled = tokens.has_tools and encode is not None and decode is not None
        # Only the last position's logits are needed; skip the (T, V) prefill logits when supported.
        self._logits_to_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._cache_keyword = model_cache_keyword(model.forward)

    @classmethod
    def from_tokenizer(cls, model: torch.nn.Module, tokenizer, **kwargs) -> "Engine":
        """An engine whose special ids and tool encode/decode come from a transformers tokenizer."""
        return cls(
            model,
            ChatTokens.from_tokenizer(tokenizer),
            encode=lambda text: tokenizer.encode(text, add_special_tokens=False),
            decode=lambda ids: tokenizer.decode(ids),
            **kwargs,
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _new_cache(self) -> DynamicCache:
        config = getattr(self.model, "config", None)
        try:
            return DynamicCache(config=config) if config is not None else DynamicCache()
        except (AttributeError, TypeError):  # a config without the fields caches read
            return DynamicCache()

    def _last_logits(self, input_ids: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        """Run input_ids (B, T) through the model, extending `cache`; return logits (B, V)."""
        kwargs = {"logits_to_keep": 1} if self._logits_to_keep else {}
        kwargs[self._cache_keyword] = cache
        out = self.model(input_ids=input_ids, use_cache=True, **kwargs)
        return out.logits[:, -1, :]

    def _advance(self, row: _Row, token: int, forced: bool) -> None:
        """Record one token in a row and update its tool and stop state."""
        row.tokens.append(token)
        row.masks.append(0 if forced else 1)
        t = self.tokens
        if token in t.stop_ids:
            row.done = True
        elif not self.tools_enabled:
            return
        elif token == t.python_start:
            row.expr = []
        elif token == t.python_end and row.expr is not None:
            result = self.tool(self.decode(row.expr))
            row.expr = None
            if result is not None:
                row.forced.extend([t.output_start, *self.encode(result), t.output_end])
        elif row.expr is not None:
            row.expr.append(token)

    def generate(
        self,
        prompt: Sequence[int],
        num_samples: int = 1,
        max_tokens: int | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> Iterator[tuple[list[int | None], list[int]]]:
        """Generate `num_samples` continuations of `prompt` (a list of ids), one step at a time.

        Yields `(token_column, mask_column)`, both of length `num_samples`, after every decoding
        step: the id each row produced (None for rows that already finished) and 1 if it was sampled,
        0 if forced by the tool (or finished). A row's stop token is yielded, then the row ends.
        `max_tokens=None` generates until the context is full. Closing the generator (or just
        stopping iteration) ends the work: nothing runs ahead of the consumer.
        """
        prompt = [int(i) for i in prompt]
        if not prompt:
            raise ValueError("prompt is empty: pass at least one token id (e.g. <|bos|>)")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if max_tokens is not None and max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0 or None, got {max_tokens}")
        if self.max_context is not None and len(prompt) >= self.max_context:
            raise ValueError(f"prompt has {len(prompt)} tokens; the context holds {self.max_context}, "
                             "leaving no room to generate")
        budget = max_tokens if max_tokens is not None else float("inf")
        if self.max_context is not None:  # the last generated token is never fed back, hence + 1
            budget = min(budget, self.max_context - len(prompt) + 1)
        if budget <= 0:
            return
        device = self.device
        generator = None
        if seed is not None:
            generator = torch.Generator(device=device)
            generator.manual_seed(seed)

        rows = [_Row() for _ in range(num_samples)]
        active = list(range(num_samples))  # batch position in the cache -> sample index
        cache = self._new_cache()
        with torch.inference_mode():
            logits = self._last_logits(torch.tensor([prompt], device=device), cache)  # (1, V)
            if num_samples > 1:  # fan the one prefill out to every sample
                cache.batch_repeat_interleave(num_samples)
                logits = logits.expand(num_samples, -1)
        step = 0
        while active and step < budget:
            with torch.inference_mode():
                sampled = sample_next_token(logits, temperature, top_k, top_p, generator).tolist()
            column: list[int | None] = [None] * num_samples
            masks = [0] * num_samples
            for batch_pos, r in enumerate(active):
                row = rows[r]
                forced = bool(row.forced)
                token = row.forced.popleft() if forced else int(sampled[batch_pos])
                self._advance(row, token, forced)
                column[r], masks[r] = token, row.masks[-1]
            step += 1
            yield column, masks
            if step >= budget:
                break
            keep = [i for i, r in enumerate(active) if not rows[r].done]
            if not keep:
                break
            with torch.inference_mode():
                if len(keep) < len(active):  # finished rows leave the batch (and the cache)
                    cache.batch_select_indices(torch.tensor(keep, device=device))
                    active = [active[i] for i in keep]
                next_ids = torch.tensor([[rows[r].tokens[-1]] for r in active], device=device)  # (B, 1)
                logits = self._last_logits(next_ids, cache)

    def generate_batch(
        self,
        prompt: Sequence[int],
        num_samples: int = 1,
        on_token: Callable[[int, int, bool], None] | None = None,
        **kwargs,
    ) -> tuple[list[list[int]], list[list[int]]]:
        """Run `generate` to the end; return (token lists, mask lists), one per sample, without the
        stop token. `on_token(sample_index, token_id, forced)` is called for every token, stop token
        included, as soon as it is produced. Other keyword arguments go to `generate`."""
        results: list[list[int]] = [[] for _ in range(num_samples)]
        masks: list[list[int]] = [[] for _ in range(num_samples)]
        stop = self.tokens.stop_ids
        finished = [False] * num_samples
        for column, mask_column in self.generate(prompt, num_samples=num_samples, **kwargs):
            for r, token in enumerate(column):
                if token is None or finished[r]:
                    continue
                if on_token is not None:
                    on_token(r, token, mask_column[r] == 0)
                if token in stop:
                    finished[r] = True
                else:
                    results[r].append(token)
                    masks[r].append(mask_column[r])
        return results, masks


# ----------------------------------------------------------------------------- helpers for front-ends
# The engine itself never decodes; these two small helpers are shared by the CLI and the server,
# which show replies as text (tool blocks appear as the control-token strings the model wrote).

_TOOL_BLOCK = re.compile(r"<\|(python|output)_start\|>(.*?)<\|\1_end\|>", re.DOTALL)


class TextStream:
    """Turns one row's token ids into text deltas with a `decode(ids) -> str` function. A byte-level
    BPE token can end inside a UTF-8 character; such a tail decodes to U+FFFD and is held back until
    the next token completes it (a character spans at most 4 tokens, so at most 8 are held)."""

    def __init__(self, decode: Callable[[list[int]], str]):
        self.decode = decode
        self.pending: list[int] = []

    def push(self, token: int) -> str:
        """Add a token; return the text it completes (possibly empty)."""
        self.pending.append(token)
        text = self.decode(self.pending)
        if text.endswith("\ufffd") and len(self.pending) < 8:
            return ""
        self.pending = []
        return text

    def flush(self) -> str:
        """Whatever is still held back (at the end of a reply)."""
        text, self.pending = (self.decode(self.pending) if self.pending else ""), []
        return text


def assistant_parts(text: str) -> str | list[dict]:
    """A reply as text, with tool blocks written as control-token strings
    (`<|python_start|>1+2<|python_end|><|output_start|>3<|output_end|>`), back into the chat schema:
    the plain string when it has no tool block, else a list of text/python/output parts."""
    if "<|python_start|>" not in text and "<|output_start|>" not in text:
        return text
    parts, pos = [], 0
    for match in _TOOL_BLOCK.finditer(text):
        if match.start() > pos:
            parts.append({"type": "text", "text": text[pos:match.start()]})
        parts.append({"type": match.group(1), "text": match.group(2)})
        pos = match.end()
    if pos < len(text):
        parts.append({"type": "text", "text": text[pos:]})
    return parts


__all__ = ["ChatTokens", "Engine", "SPECIAL_TOKEN_NAMES", "TextStream", "assistant_parts", "sample_next_token"]
