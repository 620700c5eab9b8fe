"""Row packers: documents (`[BOS] + tokens`) -> rows of exactly `capacity` tokens (`T + 1`: inputs are
the first T, targets the last T), with their state for exact resume.

Three modes, one interface (`next_row()`, `rows()`, `stats`, `state_dict()` / `load_state_dict()`):

- `"crop"`: nanochat's BOS-aligned best-fit (`BestFitPacker(mode="crop")`). A row is filled greedily
  from a buffer of candidate documents: the longest that still fits whole goes in next; when none fits,
  the shortest is cropped to fill the row exactly and the rest of it is dropped (`stats["cropped"]`).
  Every target sees its document from the start, at the cost of the cropped tokens: on the stdlib corpus
  (4096-token BPE) 74% at T=64, 35% at T=256, 3% at T=2048; on Shakespeare (one byte per token, 1000-
  character documents) 92.5% at T=64 (`python scripts/bench.py data`).
- `"continue"` (the default): the same best fit, but nothing is dropped. When no piece fits, the piece
  split is the longest if it is longer than a whole row (so a long document is read from its start,
  row after row), else the shortest (nanochat's choice); its rest returns to the buffer and continues
  in a later row. The rest starts at the last token placed (that token is the row's last target and
  the continuation's first input), so every token of every document is a target exactly once.
- `"stream"`: nanoGPT's contiguous stream (`StreamPacker`): the documents in arrival order, cut into
  rows every T tokens (consecutive rows share one token, as above). No buffer, no reordering, nothing
  dropped; rows start wherever the stream is.

`crop` keeps every target's document start in its row (100% "aligned"); `continue` keeps every token and
stays close to that where rows are long enough (stdlib at T=512: 95% of targets aligned against the
stream's 74%); `stream` has the fewest aligned targets at every length. `"pad"` (for SFT) closes a row
when nothing fits and leaves the rest to padding (`stats["padded"]`); documents must fit a row.

A row is a list of `Piece(key, start, take)`: `take` tokens of document `key` from offset `start`; a
piece whose document ends or is cropped there has `last=True` (the caller may release the tokens).
The packers see only keys and lengths; reading tokens is the caller's job, so the state is a few
integers per buffered piece. Ties (pieces of equal length) are broken by arrival order: the oldest
fitting piece is placed first, the newest of the shortest is split, so a plan is a pure function of the
arrival sequence (a continuation arrives when it is split off).
"""

from bisect import bisect_right, insort
from collections.abc import Callable, Iterator
from typing import NamedTuple

MODES = ("crop", "continue", "stream")  # pretraining modes (`pad` is SFT's)


class Piece(NamedTuple):
    """`take` tokens of document `key` starting at offset `start`; `last`: the document ends here."""

    key: int
    start: int
    take: int
    last: bool = True


def _new_stats() -> dict:
    # docs: documents taken from the source; doc_tokens: their tokens; cropped / dropped: tokens thrown
    # away (crop mode / the last partial row of a finite pass); repeated: tokens placed twice (the shared
    # token of a split in continue and stream modes); padded: empty slots (pad mode). Invariant:
    # rows * capacity - padded + cropped + dropped == doc_tokens + repeated.
    return {"rows": 0, "docs": 0, "doc_tokens": 0, "cropped": 0, "dropped": 0, "padded": 0, "repeated": 0}


class BestFitPacker:
    """Best-fit packing of `(key, length)` documents into rows of `capacity` tokens (`mode`: "crop",
    "continue" or "pad"; see the module docstring).

    `next_doc()` returns the next `(key, length)` or None when the source is exhausted (a finite pass).
    `next_row()` returns a row (a list of `Piece`s whose takes sum to `capacity`; in pad mode to at most
    `capacity`) or None when the source is exhausted and the buffer can no longer fill a whole row (the
    leftover tokens are counted in `stats["dropped"]`).
    """

    def __init__(self, capacity: int, next_doc: Callable[[], tuple[int, int] | None], buffer_size: int = 1000,
                 mode: str = "crop"):
        if capacity < 2:
            raise ValueError(f"row capacity must be at least 2 tokens (T + 1 with T >= 1), got {capacity}")
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be at least 1, got {buffer_size}")
        if mode not in ("crop", "continue", "pad"):
            raise ValueError(f"best-fit packing mode {mode!r} is invalid: expected 'crop', 'continue' or 'pad'")
        self.capacity, self.buffer_size, self.next_doc, self.mode = capacity, buffer_size, next_doc, mode
        # Sorted by (length, -arrival): bisect finds the longest fitting piece, [0] the shortest.
        self._sorted: list[tuple[int, int]] = []
        self._pieces: dict[int, tuple[int, int]] = {}  # arrival -> (document key, start offset)
        self._arrivals = 0
        self._exhausted = False
        self.stats = _new_stats()

    def _push(self, key: int, start: int, length: int) -> None:
        insort(self._sorted, (length, -self._arrivals))
        self._pieces[self._arrivals] = (key, start)
        self._arrivals += 1

    def _refill(self) -> None:
        while not self._exhausted and len(self._sorted) < self.buffer_size:
            doc = self.next_doc()
            if doc is None:
                self._exhausted = True
                break
            key, length = doc
            if length < 1:
                raise ValueError(f"document {key} is empty: every document holds at least its BOS token")
            if self.mode == "pad" and length > self.capacity:
                raise ValueError(f"document {key} has {length} tokens, more than a row ({self.capacity}): "
                                 "with mode='pad' every document must fit in a row")
            self.stats["docs"] += 1
            self.stats["doc_tokens"] += length
            self._push(key, 0, length)

    def _take(self, index: int) -> tuple[int, int, int]:
        length, neg_arrival = self._sorted.pop(index)
        key, start = self._pieces.pop(-neg_arrival)
        return key, start, length

    def next_row(self, capacity: int | None = None) -> list[Piece] | None:
        """The next row, of `capacity` tokens (default: the packer's; a sequence-length curriculum
        asks for shorter rows first)."""
        capacity = capacity or self.capacity
        pieces, remaining = [], capacity
        while remaining:
            self._refill()
            if not self._sorted:  # exhausted: the partial row cannot be completed without padding
                if self.mode != "pad" or not pieces:
                    self.stats["dropped"] += capacity - remaining
                    return None
                break
            # Longest piece with length <= remaining (and, among equals, the oldest).
            i = bisect_right(self._sorted, (remaining, 0)) - 1
            if i >= 0:
                key, start, length = self._take(i)
                pieces.append(Piece(key, start, length))
                remaining -= length
                continue
            if self.mode == "pad":  # nothing fits whole: close the row, the caller pads it
                break
            if self.mode == "crop":  # crop the shortest to fill the row exactly; drop its rest
                key, start, length = self._take(0)
                self.stats["cropped"] += length - remaining
                pieces.append(Piece(key, start, remaining))
            else:  # continue: split the longest if longer than a row, else the shortest; keep the rest
                longest = self._sorted[-1][0] > capacity
                key, start, length = self._take(len(self._sorted) - 1 if longest else 0)
                pieces.append(Piece(key, start, remaining, last=False))
                # the rest starts at the last token placed: it is this row's last target and its first input
                self._push(key, start + remaining - 1, length - remaining + 1)
                self.stats["repeated"] += 1
            remaining = 0
        self.stats["rows"] += 1
        self.stats["padded"] += remaining
        return pieces

    def rows(self) -> Iterator[list[Piece]]:
        while (row := self.next_row()) is not None:
            yield row

    def state_dict(self) -> dict:
        """The buffer (keys, start offsets, lengths, arrival numbers) and counters; JSON-serialisable."""
        buffer = [[*self._pieces[-neg], length, -neg] for length, neg in self._sorted]
        return {"mode": self.mode, "buffer": buffer, "arrivals": self._arrivals, "exhausted": self._exhausted,
                "stats": dict(self.stats)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("mode", "crop") != self.mode:
            raise ValueError(f"packer state was saved in mode {state.get('mode')!r}, this packer is {self.mode!r}")
        self._sorted = sorted((int(length), -int(arrival)) for _, _, length, arrival in state["buffer"])
        self._pieces = {int(arrival): (int(key), int(start)) for key, start, _, arrival in state["buffer"]}
        self._arrivals = int(state["arrivals"])
        self._exhausted = bool(state["exhausted"])
        self.stats = _new_stats() | {k: int(v) for k, v in state["stats"].items()}


class StreamPacker:
    """nanoGPT's contiguous stream: documents in arrival order, cut into rows of `capacity` tokens, each
    row starting at the previous row's last token (so every token is a target exactly once)."""

    mode = "stream"

    def __init__(self, capacity: int, next_doc: Callable[[], tuple[int, int] | None]):
        if capacity < 2:
            raise ValueError(f"row capacity must be at least 2 tokens (T + 1 with T >= 1), got {capacity}")
        self.capacity, self.next_doc = capacity, next_doc
        self._current: tuple[int, int, int] | None = None  # (key, start, length) of the document being read
        self._exhausted = False
        self.stats = _new_stats()

    def _advance(self) -> bool:
        """Make sure a document with tokens left is current; False when the source is exhausted."""
        while self._current is None:
            doc = None if self._exhausted else self.next_doc()
            if doc is None:
                self._exhausted = True
                return False
            key, length = doc
            if length < 1:
                raise ValueError(f"document {key} is empty: every document holds at least its BOS token")
            self.stats["docs"] += 1
            self.stats["doc_tokens"] += length
            self._current = (key, 0, length)
        return True

    def next_row(self, capacity: int | None = None) -> list[Piece] | None:
        pieces, remaining = [], capacity or self.capacity
        while remaining:
            if not self._advance():  # the partial last row is dropped
                self.stats["dropped"] += sum(p.take for p in pieces)
                return None
            key, start, length = self._current
            take = min(remaining, length - start)
            done = start + take == length
            pieces.append(Piece(key, start, take, last=done and remaining > take))
            remaining -= take
            self._current = None if done else (key, start + take, length)
        # the next row starts with this row's last token: step back one token in its document
        last = pieces[-1]
        self._current = (last.key, last.start + last.take - 1, self._current[2] if self._current else
                         last.start + last.take)
        pieces[-1] = last._replace(last=False)
        self.stats["rows"] += 1
        self.stats["repeated"] += 1
        return pieces

    def rows(self) -> Iterator[list[Piece]]:
        while (row := self.next_row()) is not None:
            yield row

    def state_dict(self) -> dict:
        return {"mode": self.mode, "current": list(self._current) if self._current else None,
                "exhausted": self._exhausted, "stats": dict(self.stats)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("mode") != self.mode:
            raise ValueError(f"packer state was saved in mode {state.get('mode')!r}, this packer is 'stream'")
        self._current = tuple(int(v) for v in state["current"]) if state["current"] else None
        self._exhausted = bool(state["exhausted"])
        self.stats = _new_stats() | {k: int(v) for k, v in state["stats"].items()}


def make_packer(mode: str, capacity: int, next_doc, buffer_size: int = 1000):
    """The packer of pretraining `mode` ("crop", "continue" or "stream")."""
    if mode not in MODES:
        raise ValueError(f"packing mode {mode!r} is invalid: expected one of {', '.join(MODES)}")
    if mode == "stream":
        return StreamPacker(capacity, next_doc)
    return BestFitPacker(capacity, next_doc, buffer_size, mode=mode)
