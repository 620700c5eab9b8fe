"""The pretraining data loader: corpus -> `datasets.map` tokenization -> packed rows (one of the modes
of `packing`: "continue" best fit (default), nanochat's "crop" best fit, nanoGPT's contiguous "stream").

    loader = build_pretrain_loader("stdlib", tokenizer, batch_size=8, seq_len=512, packing="continue")
    for batch in loader:            # {"input_ids": (B, T), "shift_labels": (B, T)}, int64
        ...
    state = loader.state_dict()     # JSON-serialisable; load_state_dict(state) resumes exactly

Tokenization runs once per corpus and tokenizer through `datasets.map` (batched, `num_proc`, cached in
the `datasets` cache next to the corpus; the cache key is the corpus fingerprint plus a hash of the
tokenizer). Every document becomes `[BOS] + tokens` and the packer fills rows of T+1 tokens; inputs are
a row's first T tokens, `shift_labels` its last T (the next token at each position). Why "continue" is
the default: it throws nothing away (crop drops 35% of the stdlib corpus at T=256 and 92.5% of
Shakespeare at T=64) yet keeps nearly as many targets next to their document's start as crop does
where rows are long enough, and more than the stream at every length (measured by `bench.py data`).

Local and stdlib corpora (random access):
- train: each epoch visits every document once in a fresh order, a permutation seeded by
  (seed, epoch); epochs follow each other forever, the packing buffer carrying over the boundary.
  val: one pass in corpus order, then the iteration ends (the next `iter()` starts a new pass).
- sharding: every rank runs the same packer over the same global document order and keeps its own rows
  (global batch k holds rows [k*W*B, (k+1)*W*B); rank r takes the r-th block of B). Every token lands in
  exactly one row (crop mode: every document), so no token is trained on by two ranks in the same
  epoch, the state is the same on every rank, and each rank reads only the tokens of its own rows. The last, partial global batch of a
  val pass is dealt evenly (each rank gets the same, smaller number of rows; at most W-1 rows are left
  out), so every rank runs the same number of eval steps.
- resume: `state_dict()` holds the epoch, the position in the epoch's order and the packer's buffer
  (document ids), so a restored loader yields exactly the batches the uninterrupted one would have; it
  may even change batch size or process count (the global row sequence is unchanged), but not seq_len,
  packing mode, seed, corpus or tokenizer (checked).
- row length: `set_row_len(t)` (a sequence-length curriculum) makes the next batches rows of t tokens,
  `batch_size * seq_len / t` of them per batch, so a batch holds the same number of tokens; the packer
  continues the same document order with the new row length, and the state records it.

Hub corpora (streaming): each rank streams its share (`datasets.distributed.split_dataset_by_node`) in
the hub's order (no shuffling) and packs its own rows; an exhausted train stream restarts as the next
epoch. The state holds the number of rows consumed (on resume the stream is skipped that far, without
tokenizing) and the tokens of the buffered documents. Val passes may then differ in length across ranks.

Statistics (`loader.stats`): packing mode, epoch (whose documents are being read; the buffer may still
hold a few of the previous one's), rows and tokens yielded by this rank, documents and tokens packed,
`cropped_fraction` (tokens cut off by cropping / tokens of the packed documents; 0 outside crop mode)
and tokens dropped at the end of a val pass; logged at every epoch end and after a val pass.
"""

import hashlib
import logging
import os

import numpy as np
import torch

from .corpus import load_corpus, parse_spec
from .packing import MODES, make_packer

logger = logging.getLogger(__name__)

TOKENIZE_VERSION = "tok-v1"  # part of the tokenized cache key: bump when _tokenize_batch changes
STATE_VERSION = 2  # 2: pieces with start offsets, packing mode, row length


# ----------------------------------------------------------------------------- tokenization
def _encoder(tokenizer):
    from ..tokenization import get_encoder

    return get_encoder(tokenizer)


def tokenizer_fingerprint(tokenizer) -> str:
    """A stable hash of the tokenizer's vocabulary, merges, normaliser and specials."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(f"{body}|{tokenizer.bos_token_id}".encode()).hexdigest()[:16]


def _bos_id(tokenizer) -> int:
    if tokenizer.bos_token_id is None:
        raise ValueError("the tokenizer has no BOS token: packing needs one to start every document")
    return int(tokenizer.bos_token_id)


def _tokenize_batch(batch: dict, encode, bos_id: int) -> dict:
    return {"input_ids": [[bos_id, *ids] for ids in encode(batch["text"])]}


def tokenize_corpus(ds, tokenizer, num_proc: int | None = None):
    """`ds` (a `text` column) -> a dataset with one `input_ids` column, `[BOS] + tokens` per document.

    A map-style `Dataset` is tokenized once and cached; an `IterableDataset` lazily, as it streams.
    """
    import datasets

    kwargs = dict(batched=True, batch_size=1000, remove_columns=["text"],
                  fn_kwargs={"encode": _encoder(tokenizer), "bos_id": _bos_id(tokenizer)},
                  features=datasets.Features({"input_ids": datasets.List(datasets.Value("int32"))}))
    if isinstance(ds, datasets.IterableDataset):
        return ds.map(_tokenize_batch, **kwargs)
    fingerprint = hashlib.sha256(f"{ds._fingerprint}|{tokenizer_fingerprint(tokenizer)}|{TOKENIZE_VERSION}".encode())
    return ds.map(_tokenize_batch, num_proc=num_proc, new_fingerprint=fingerprint.hexdigest()[:32],
                  desc="tokenizing", **kwargs)


class TokenizedDocs:
    """Random access to the documents of a tokenized `Dataset` without copying: numpy views of the
    Arrow buffers (memory-mapped from the cache)."""

    def __init__(self, ds):
        if ds._indices is not None:
            ds = ds.flatten_indices()
        self._values, self._offsets, starts, lengths = [], [], [0], []
        for chunk in ds.data.column("input_ids").chunks:
            offsets = chunk.offsets.to_numpy()
            self._values.append(chunk.values.to_numpy())
            self._offsets.append(offsets)
            lengths.append(np.diff(offsets))
            starts.append(starts[-1] + len(chunk))
        self._starts = np.asarray(starts, dtype=np.int64)
        self.lengths = np.concatenate(lengths).astype(np.int64) if lengths else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.lengths)

    def tokens(self, i: int) -> np.ndarray:
        c = int(np.searchsorted(self._starts, i, side="right")) - 1
        j = i - self._starts[c]
        offsets = self._offsets[c]
        return self._values[c][offsets[j]:offsets[j + 1]]


# ----------------------------------------------------------------------------- document sources
class _MapSource:
    """Documents of a tokenized `Dataset`: train loops over seeded permutations, val is one ordered pass."""

    global_rows = True  # every rank packs the same global sequence and keeps its own rows

    def __init__(self, docs: TokenizedDocs, seed: int, train: bool):
        self.docs, self.seed, self.train = docs, seed, train
        self.reset()

    def reset(self) -> None:
        self.epoch, self.cursor = 0, 0
        self._order = self._make_order()

    def _make_order(self) -> np.ndarray:
        n = len(self.docs)
        return np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.train else np.arange(n)

    def next_doc(self):
        if self.cursor == len(self._order):
            if not self.train:
                return None
            self.epoch += 1
            self.cursor = 0
            self._order = self._make_order()
            return "epoch_end"
        i = int(self._order[self.cursor])
        self.cursor += 1
        return i, int(self.docs.lengths[i])

    def tokens(self, key: int) -> np.ndarray:
        return self.docs.tokens(key)

    def release(self, key: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self._order = self._make_order()


class _StreamSource:
    """Documents of this rank's share of a streamed (`IterableDataset`) corpus, in stream order."""

    global_rows = False  # the stream is already sharded: each rank packs its own rows

    def __init__(self, raw, tokenizer, train: bool, spec: str):
        self.raw, self.tokenizer, self.train, self.spec = raw, tokenizer, train, spec
        self.reset()

    def reset(self) -> None:
        self.epoch, self.consumed, self.next_key = 0, 0, 0
        self.docs: dict[int, np.ndarray] = {}
        self._it = None
        self._yielded_this_epoch = False

    def _stream(self):
        for row in tokenize_corpus(self.raw.skip(self.consumed), self.tokenizer):
            self.consumed += 1
            yield np.asarray(row["input_ids"], dtype=np.int64)

    def next_doc(self):
        while True:
            if self._it is None:
                self._it = self._stream()
            tokens = next(self._it, None)
            if tokens is None:
                if not self._yielded_this_epoch:  # (a resumed epoch counts as having yielded)
                    raise ValueError(f"corpus spec {self.spec!r}: the stream holds no non-empty document "
                                     "for this rank")
                if not self.train:
                    return None
                self.epoch, self.consumed, self._it, self._yielded_this_epoch = self.epoch + 1, 0, None, False
                return "epoch_end"
            if len(tokens) > 1:  # [BOS] alone: an empty text
                key, self.next_key = self.next_key, self.next_key + 1
                self.docs[key] = tokens
                self._yielded_this_epoch = True
                return key, len(tokens)

    def tokens(self, key: int) -> np.ndarray:
        return self.docs[key]

    def release(self, key: int) -> None:
        self.docs.pop(key, None)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed": self.consumed, "next_key": self.next_key,
                "docs": {str(k): v.tolist() for k, v in self.docs.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.consumed, self.next_key = int(state["epoch"]), int(state["consumed"]), int(state["next_key"])
        self.docs = {int(k): np.asarray(v, dtype=np.int64) for k, v in state["docs"].items()}
        self._it, self._yielded_this_epoch = None, self.consumed > 0


# ----------------------------------------------------------------------------- sequence-length warmup
def curriculum_seq_len(step: int, start: int, max_len: int, warmup_steps: int, tokens_per_batch: int) -> int:
    """Row length at `step` of a sequence-length warmup: linear from `start` (step 0) to `max_len` (from
    step `warmup_steps` on), rounded down to a multiple of 64 (of 8 below 64) that divides
    `tokens_per_batch`, so a batch keeps its tokens as a whole number of rows (the smallest such length
    when the ramp is below all of them)."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return max_len
    target = start + (max_len - start) * step / warmup_steps
    allowed = [t for t in range(8, max_len, 8) if (t < 64 or t % 64 == 0) and tokens_per_batch % t == 0]
    below = [t for t in allowed if t <= target]
    return below[-1] if below else (allowed[0] if allowed else max_len)


# ----------------------------------------------------------------------------- the loader
class PretrainLoader:
    """Iterable of `{"input_ids": (B, T), "shift_labels": (B, T)}` int64 batches; see the module docstring."""

    def __init__(self, source, batch_size: int, seq_len: int, split: str, rank: int = 0, world_size: int = 1,
                 buffer_size: int = 1000, identity: dict | None = None, packing: str = "continue"):
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be >= 1, got batch_size={batch_size}, seq_len={seq_len}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside [0, world_size={world_size})")
        self.source, self.batch_size, self.seq_len, self.split = source, batch_size, seq_len, split
        self.rank, self.world_size, self.buffer_size, self.packing = rank, world_size, buffer_size, packing
        self.identity = identity or {}  # what a saved state must match (corpus, tokenizer, seq_len, seed)
        if isinstance(source, _MapSource):
            # A buffer larger than the corpus would hold several epochs' copies of a document at once.
            self.buffer_size = min(buffer_size, len(source.docs))
        self._reset()

    def _reset(self) -> None:
        self.source.reset()
        self.packer = make_packer(self.packing, self.seq_len + 1, self._next_doc, self.buffer_size)
        self.row_len = self.seq_len  # tokens per row (T); shorter under a sequence-length curriculum
        self.rows_yielded = 0
        self.tokens_yielded = 0
        self.batches_yielded = 0
        self.finished = False

    def _next_doc(self):
        doc = self.source.next_doc()
        while doc == "epoch_end":
            self._log(f"epoch {self.source.epoch - 1} done")
            doc = self.source.next_doc()
        return doc

    def set_row_len(self, row_len: int) -> None:
        """Rows of `row_len` tokens from the next batch on, `batch_size * seq_len / row_len` per batch."""
        if not 0 < row_len <= self.seq_len or (self.batch_size * self.seq_len) % row_len:
            raise ValueError(f"row length {row_len} must divide batch_size x seq_len = {self.batch_size} x "
                             f"{self.seq_len} and be at most seq_len")
        self.row_len = row_len

    @property
    def rows_per_batch(self) -> int:
        return self.batch_size * self.seq_len // self.row_len

    @property
    def stats(self) -> dict:
        s = self.packer.stats
        return {"packing": self.packing, "epoch": self.source.epoch, "batches": self.batches_yielded,
                "rows": self.rows_yielded, "tokens": self.tokens_yielded, "docs_packed": s["docs"],
                "rows_packed": s["rows"], "cropped_fraction": s["cropped"] / max(s["doc_tokens"], 1),
                "dropped_tokens": s["dropped"]}

    def _log(self, what: str) -> None:
        st = self.stats
        logger.info("%s data (rank %d, %s packing): %s; %d docs packed into %d rows, %.1f%% of tokens cropped, "
                    "%d tokens yielded", self.split, self.rank, self.packing, what, st["docs_packed"],
                    st["rows_packed"], 100 * st["cropped_fraction"], st["tokens"])

    def _release(self, rows) -> None:
        for piece in (p for row in rows for p in row):
            if piece.last:  # the document has no tokens left for later rows
                self.source.release(piece.key)

    def _row_array(self, pieces) -> np.ndarray:
        row, pos = np.empty(self.row_len + 1, dtype=np.int64), 0
        for key, start, take, _ in pieces:
            row[pos:pos + take] = self.source.tokens(key)[start:start + take]
            pos += take
        return row

    def _next_rows(self) -> list | None:
        """This rank's rows of the next batch, or None at the end of a val pass."""
        B, W, capacity = self.rows_per_batch, self.world_size, self.row_len + 1
        if not self.source.global_rows:
            rows = []
            while len(rows) < B and (row := self.packer.next_row(capacity)) is not None:
                rows.append(row)
            return rows or None
        group = []
        while len(group) < W * B and (row := self.packer.next_row(capacity)) is not None:
            group.append(row)
        per_rank = B if len(group) == W * B else len(group) // W  # last val group: dealt evenly
        mine = group[self.rank * per_rank:(self.rank + 1) * per_rank]
        self._release([row for i, row in enumerate(group) if not self.rank * per_rank <= i < (self.rank + 1) * per_rank])
        return mine or None

    def __iter__(self):
        if self.finished:  # a val loader is re-iterable: each iteration after the end is a new pass
            self._reset()
        while True:
            rows = self._next_rows()
            if rows is None:
                self.finished = True
                self._log("pass done")
                return
            batch = torch.from_numpy(np.stack([self._row_array(r) for r in rows]))  # (b, T+1)
            self._release(rows)
            self.rows_yielded += len(rows)
            self.tokens_yielded += len(rows) * self.row_len
            self.batches_yielded += 1
            yield {"input_ids": batch[:, :-1].contiguous(), "shift_labels": batch[:, 1:].contiguous()}

    def state_dict(self) -> dict:
        """Everything needed to continue exactly after the last yielded batch (JSON-serialisable)."""
        return {"version": STATE_VERSION, "identity": dict(self.identity), "source": self.source.state_dict(),
                "packer": self.packer.state_dict(), "rows_yielded": self.rows_yielded,
                "tokens_yielded": self.tokens_yielded, "batches_yielded": self.batches_yielded,
                "finished": self.finished, "row_len": self.row_len}

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"data loader state version {state.get('version')!r} is not {STATE_VERSION}")
        for key, value in self.identity.items():
            saved = state["identity"].get(key)
            if saved != value:
                raise ValueError(f"data loader state was saved with {key}={saved!r} but this loader has "
                                 f"{key}={value!r}; exact resume needs the same {key}")
        self.source.load_state_dict(state["source"])
        self.packer.load_state_dict(state["packer"])
        self.rows_yielded, self.batches_yielded = int(state["rows_yielded"]), int(state["batches_yielded"])
        self.tokens_yielded, self.row_len = int(state["tokens_yielded"]), int(state["row_len"])
        self.finished = bool(state["finished"])


def build_pretrain_loader(spec: str, tokenizer, batch_size: int, seq_len: int, split: str = "train", *,
                          rank: int = 0, world_size: int = 1, seed: int = 0, num_proc: int | None = None,
                          cache_dir: str | os.PathLike | None = None, buffer_size: int = 1000,
                          packing: str = "continue") -> PretrainLoader:
    """The loader for corpus `spec` (syntax in `hf_nanogpt.data.corpus`) and `split` ("train" loops over
    reshuffled epochs forever, "val" is one pass in order), for process `rank` of `world_size`.

    `packing` is the row mode ("continue", "crop", "stream"; see `hf_nanogpt.data.packing`);
    `num_proc` processes tokenize the corpus the first time (later runs read the cache); `buffer_size`
    is the best-fit candidate pool (nanochat: 1000; capped at the number of documents).
    """
    if packing not in MODES:
        raise ValueError(f"packing mode {packing!r} is invalid: expected one of {', '.join(MODES)}")
    parsed = parse_spec(spec, split)
    ds = load_corpus(spec, split, cache_dir=cache_dir)
    identity = {"spec": spec, "split": split, "seq_len": seq_len, "seed": seed, "buffer_size": buffer_size,
                "packing": packing, "tokenizer": tokenizer_fingerprint(tokenizer)}
    if parsed.streaming:
        from datasets.distributed import split_dataset_by_node

        if ds.column_names is not None and "text" not in ds.column_names:
            raise ValueError(f"corpus spec {spec!r}: the hub dataset has no 'text' column "
                             f"(columns: {', '.join(ds.column_names)})")

        source = _StreamSource(split_dataset_by_node(ds, rank=rank, world_size=world_size), tokenizer,
                               train=split == "train", spec=spec)
        identity["world_size"] = world_size  # each rank's stream depends on the process count
    else:
        source = _MapSource(TokenizedDocs(tokenize_corpus(ds, tokenizer, num_proc=num_proc)), seed,
                            train=split == "train")
    return PretrainLoader(source, batch_size, seq_len, split, rank=rank, world_size=world_size,
                          buffer_size=buffer_size, identity=identity, packing=packing)
