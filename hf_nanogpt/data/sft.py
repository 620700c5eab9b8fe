"""SFT batching: conversations -> (ids, loss mask) -> padded or packed micro-batches, resumable.

    loader = build_sft_loader(mixture, tokenizer, batch_size=8, seq_len=512, mode="pad", epochs=1)
    for batch in loader:
        batch["input_ids"]          # (B, L) int64
        batch["shift_labels"]       # (B, L) int64: the next token where it is supervised, else -100
        batch["attention_mask"]     # (B, L) int64: 1 on real tokens, 0 on padding
        batch["num_items_in_batch"] # () int64: supervised targets in this micro-batch, at least 1

Rendering: `hf_nanogpt.tokenization.render_conversation` through `datasets.map`; the loss mask is 1 on
assistant text, tool calls and `<|assistant_end|>` only. A conversation longer than `seq_len + 1` tokens
is cut there (what is cut is not trained on).

Modes:
- "pad": one conversation per row, right-padded to the longest row of the micro-batch (L <= seq_len).
- "pack": BOS-aligned best-fit packing of whole conversations into rows of `seq_len + 1` tokens
  (L = seq_len); when no conversation fits the rest of a row, the row is padded rather than a
  conversation cropped (a cropped conversation would lose its answer). Packed conversations attend to
  earlier ones in the row, as packed pretraining documents do.

Padding uses the tokenizer's pad token (else BOS) with target -100 and attention 0.

No NaN on empty micro-batches: a micro-batch can hold no supervised target (all answers cut off, or
tool outputs only); a mean over zero targets is 0/0 = NaN (nanochat issue 590). `num_items_in_batch`
is the count clamped to at least 1, so `model(**batch)` (a sum over targets divided by it) gives the
micro-batch mean, and 0 with zero gradient when there is nothing to learn. For token-weighted gradient
accumulation the training loop replaces it with the total over the step's micro-batches (summed across
ranks), again at least 1: `(batch["shift_labels"] != -100).sum()` per micro-batch.

Epochs and sharding: each epoch visits every conversation once in a fresh order seeded by (seed, epoch);
global batch k holds the next W*B rows and rank r takes its block of B, so ranks never share a
conversation and all run the same number of steps (the last global batch of an epoch is dealt evenly,
at most W-1 rows left out). `epochs=None` loops forever; `state_dict()` resumes exactly.
"""

import hashlib

import numpy as np
import torch

from .packing import BestFitPacker, Piece
from .pretrain import TokenizedDocs, tokenizer_fingerprint

RENDER_VERSION = "render-v1"  # part of the rendered cache key
STATE_VERSION = 1


def _render_batch(batch: dict, indices: list[int], tokenizer, max_tokens: int) -> dict:
    from ..tokenization import render_conversation

    ids_out, mask_out = [], []
    for messages, index in zip(batch["messages"], indices):
        try:
            ids, mask = render_conversation(tokenizer, messages, max_tokens=max_tokens)
        except ValueError as err:
            raise ValueError(f"conversation {index}: {err}") from None
        ids_out.append(ids)
        mask_out.append(mask)
    return {"input_ids": ids_out, "loss_mask": mask_out}


def as_conversation_dataset(conversations):
    """A `datasets.Dataset` with a `messages` column from a Dataset, a list of `{"messages": [...]}` rows
    or a list of message lists."""
    import datasets

    if isinstance(conversations, datasets.Dataset):
        if "messages" not in conversations.column_names:
            raise ValueError(f"SFT dataset has no 'messages' column (columns: {', '.join(conversations.column_names)})")
        return conversations
    rows = []
    for i, row in enumerate(conversations):
        messages = row.get("messages") if isinstance(row, dict) else row
        if not isinstance(messages, list):
            raise ValueError(f"conversation {i}: expected {{'messages': [...]}} or a list of messages, "
                             f"got {type(row).__name__}")
        rows.append(messages)
    from ..tasks.base import messages_feature

    return datasets.Dataset.from_dict({"messages": rows}, features=datasets.Features({"messages": messages_feature()}))


def render_dataset(conversations, tokenizer, max_tokens: int, num_proc: int | None = None):
    """Conversations -> a Dataset of `input_ids` and `loss_mask` lists (cached when the input is)."""
    import datasets

    ds = as_conversation_dataset(conversations)
    key = f"{ds._fingerprint}|{tokenizer_fingerprint(tokenizer)}|{max_tokens}|{RENDER_VERSION}"
    return ds.map(
        _render_batch, with_indices=True, batched=True, batch_size=256, num_proc=num_proc,
        remove_columns=ds.column_names, fn_kwargs={"tokenizer": tokenizer, "max_tokens": max_tokens},
        features=datasets.Features({"input_ids": datasets.List(datasets.Value("int32")),
                                    "loss_mask": datasets.List(datasets.Value("int8"))}),
        new_fingerprint=hashlib.sha256(key.encode()).hexdigest()[:32], desc="rendering conversations",
    )


class _Column(TokenizedDocs):
    """Random access to one list column (the rendered `loss_mask`), as `TokenizedDocs` does for ids."""

    def __init__(self, ds, column: str):
        super().__init__(ds.select_columns([column]).rename_column(column, "input_ids"))


class SFTLoader:
    """Iterable of SFT micro-batches; see the module docstring."""

    def __init__(self, rendered, batch_size: int, seq_len: int, *, rank: int = 0, world_size: int = 1,
                 seed: int = 0, mode: str = "pad", epochs: int | None = None, pad_id: int = 0,
                 buffer_size: int = 1000):
        if mode not in ("pad", "pack"):
            raise ValueError(f"SFT mode {mode!r} is invalid: expected 'pad' or 'pack'")
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be >= 1, got batch_size={batch_size}, seq_len={seq_len}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside [0, world_size={world_size})")
        if epochs is not None and epochs < 1:
            raise ValueError(f"epochs must be >= 1 or None (forever), got {epochs}")
        self.ids, self.masks = TokenizedDocs(rendered), _Column(rendered, "loss_mask")
        if len(self.ids) == 0:
            raise ValueError("SFT dataset is empty")
        self.batch_size, self.seq_len, self.rank, self.world_size = batch_size, seq_len, rank, world_size
        self.seed, self.mode, self.epochs, self.pad_id, self.buffer_size = seed, mode, epochs, pad_id, buffer_size
        self._start_epoch(0)
        self.batches_yielded = self.targets_yielded = 0

    # ---- one epoch: a seeded order and (pack mode) a packer over it
    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.ids))

    def _start_epoch(self, epoch: int) -> None:
        self.epoch, self.cursor = epoch, 0
        self._epoch_order = self._order(epoch)
        self.packer = BestFitPacker(self.seq_len + 1, self._next_doc, self.buffer_size, mode="pad")

    def _next_doc(self):
        if self.cursor == len(self._epoch_order):
            return None
        i = int(self._epoch_order[self.cursor])
        self.cursor += 1
        return i, int(self.ids.lengths[i])

    def _next_row(self):
        if self.mode == "pack":
            return self.packer.next_row()
        doc = self._next_doc()
        return None if doc is None else [Piece(doc[0], 0, doc[1])]

    def _next_rows(self) -> list | None:
        """This rank's rows of the next micro-batch (moving on to the next epoch), or None at the end."""
        B, W = self.batch_size, self.world_size
        while self.epochs is None or self.epoch < self.epochs:
            group = []
            while len(group) < W * B and (row := self._next_row()) is not None:
                group.append(row)
            per_rank = B if len(group) == W * B else len(group) // W
            if per_rank:
                return group[self.rank * per_rank:(self.rank + 1) * per_rank]
            self._start_epoch(self.epoch + 1)
        return None

    def num_batches(self, epoch: int = 0) -> int:
        """Micro-batches per rank in `epoch` (the same on every rank); in pack mode found by packing the
        epoch's lengths (no tokens read), so it may differ by a few between epochs."""
        if self.mode == "pad":
            rows = len(self.ids)
        else:
            order = iter(self._order(epoch).tolist())

            def next_doc():
                i = next(order, None)
                return None if i is None else (i, int(self.ids.lengths[i]))

            packer = BestFitPacker(self.seq_len + 1, next_doc, self.buffer_size, mode="pad")
            rows = sum(1 for _ in packer.rows())
        full, rest = divmod(rows, self.world_size * self.batch_size)
        return full + (1 if rest // self.world_size else 0)

    def _batch(self, rows) -> dict:
        ids = [np.concatenate([self.ids.tokens(p.key)[:p.take] for p in row]) for row in rows]  # pieces start at 0
        masks = [np.concatenate([self.masks.tokens(p.key)[:p.take] for p in row]) for row in rows]
        width = self.seq_len if self.mode == "pack" else max(len(x) for x in ids) - 1  # L
        input_ids = np.full((len(rows), width + 1), self.pad_id, dtype=np.int64)
        supervised = np.zeros((len(rows), width + 1), dtype=bool)
        attention = np.zeros((len(rows), width), dtype=np.int64)
        for b, (x, m) in enumerate(zip(ids, masks)):
            input_ids[b, :len(x)] = x
            supervised[b, :len(m)] = m.astype(bool)
            attention[b, :min(len(x), width)] = 1
        labels = np.where(supervised[:, 1:], input_ids[:, 1:], -100)  # the target of position p is token p+1
        count = int(supervised[:, 1:].sum())
        self.targets_yielded += count
        return {"input_ids": torch.from_numpy(input_ids[:, :-1].copy()), "shift_labels": torch.from_numpy(labels),
                "attention_mask": torch.from_numpy(attention),
                "num_items_in_batch": torch.tensor(max(count, 1), dtype=torch.int64)}

    def __iter__(self):
        while (rows := self._next_rows()) is not None:
            self.batches_yielded += 1
            yield self._batch(rows)

    @property
    def stats(self) -> dict:
        return {"epoch": self.epoch, "batches": self.batches_yielded, "targets": self.targets_yielded,
                "padded_fraction": self.packer.stats["padded"] / max(self.packer.stats["rows"] * (self.seq_len + 1), 1)
                if self.mode == "pack" else None}

    def state_dict(self) -> dict:
        return {"version": STATE_VERSION, "identity": self._identity(), "epoch": self.epoch, "cursor": self.cursor,
                "packer": self.packer.state_dict(), "batches_yielded": self.batches_yielded,
                "targets_yielded": self.targets_yielded}

    def _identity(self) -> dict:
        return {"mode": self.mode, "seq_len": self.seq_len, "seed": self.seed, "conversations": len(self.ids),
                "tokens": int(self.ids.lengths.sum())}

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"SFT loader state version {state.get('version')!r} is not {STATE_VERSION}")
        for key, value in self._identity().items():
            if state["identity"].get(key) != value:
                raise ValueError(f"SFT loader state was saved with {key}={state['identity'].get(key)!r} but this "
                                 f"loader has {key}={value!r}; exact resume needs the same {key}")
        self._start_epoch(int(state["epoch"]))
        self.cursor = int(state["cursor"])
        self.packer.load_state_dict(state["packer"])
        self.batches_yielded, self.targets_yielded = int(state["batches_yielded"]), int(state["targets_yielded"])


def build_sft_loader(dataset, tokenizer, batch_size: int, seq_len: int, *, rank: int = 0, world_size: int = 1,
                     seed: int = 0, mode: str = "pad", epochs: int | None = None,
                     num_proc: int | None = None) -> SFTLoader:
    """An `SFTLoader` over `dataset` (a Dataset with a `messages` column, e.g. `build_mixture(...)`, or a
    list of conversations), rendered with `tokenizer` and cut at `seq_len + 1` tokens."""
    rendered = render_dataset(dataset, tokenizer, max_tokens=seq_len + 1, num_proc=num_proc)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.bos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad nor a BOS token to pad SFT rows with")
    return SFTLoader(rendered, batch_size, seq_len, rank=rank, world_size=world_size, seed=seed, mode=mode,
                     epochs=epochs, pad_id=int(pad_id))
