"""BOS-aligned best-fit packing (nanochat's pretraining packer), with its state for exact resume.

Every document starts with BOS. A row holds `capacity` tokens (`T + 1`: inputs are the first T, targets
the last T) and is filled greedily from a buffer of candidate documents: the longest document that
still fits whole goes in next; when none fits, the shortest buffered document is cropped to fill the
row exactly and the rest of it is dropped. So every row starts with BOS, there is no padding, and the
cost is the cropped tokens (`stats["cropped"]`); it shrinks as rows grow relative to documents (on the
stdlib corpus with a 4096-token vocabulary: 34% at T=256, 12% at T=512, 3% at T=2048; see
`python scripts/bench.py data`).

The packer sees only document keys and lengths; reading tokens is the caller's job, so the whole state
(`state_dict()`) is a few integers per buffered document.

Ties (documents of equal length) are broken by arrival order: the oldest fitting document is placed
first, and the newest of the shortest is cropped, so a plan is a pure function of the arrival sequence.
"""

from bisect import bisect_right, insort
from collections.abc import Callable, Iterator


class BestFitPacker:
    """Packs `(key, length)` documents into rows of exactly `capacity` tokens.

    `next_doc()` returns the next `(key, length)` or None when the source is exhausted (a finite pass).
    `next_row()` returns a row as a list of `(key, take)` pieces, each the first `take` tokens of document
    `key`, with sum(take) == capacity (with `crop=False`: <= capacity, the rest counted in
    `stats["padded"]`), or None when the source is exhausted and the buffer can no longer
    fill a whole row (the leftover tokens are counted in `stats["dropped"]`).
    """

    def __init__(self, capacity: int, next_doc: Callable[[], tuple[int, int] | None], buffer_size: int = 1000,
                 crop: bool = True):
        if capacity < 2:
            raise ValueError(f"row capacity must be at least 2 tokens (T + 1 with T >= 1), got {capacity}")
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be at least 1, got {buffer_size}")
        self.capacity = capacity
        self.buffer_size = buffer_size
        self.next_doc = next_doc
        self.crop = crop
        # Sorted by (length, -arrival): bisect finds the longest fitting doc, [0] is the shortest.
        self._sorted: list[tuple[int, int]] = []
        self._keys: dict[int, int] = {}  # arrival -> document key
        self._arrivals = 0
        self._exhausted = False
        self.stats = {"rows": 0, "docs": 0, "doc_tokens": 0, "cropped": 0, "dropped": 0, "padded": 0}

    def _refill(self) -> None:
        while not self._exhausted and len(self._sorted) < self.buffer_size:
            doc = self.next_doc()
            if doc is None:
                self._exhausted = True
                break
            key, length = doc
            if length < 1:
                raise ValueError(f"document {key} is empty: every document holds at least its BOS token")
            if not self.crop and length > self.capacity:
                raise ValueError(f"document {key} has {length} tokens, more than a row ({self.capacity}): "
                                 "with crop=False every document must fit in a row")
            insort(self._sorted, (length, -self._arrivals))
            self._keys[self._arrivals] = key
            self._arrivals += 1

    def _take(self, index: int) -> tuple[int, int]:
        length, neg_arrival = self._sorted.pop(index)
        self.stats["docs"] += 1  # counted when a document leaves the buffer (placed whole or cropped)
        self.stats["doc_tokens"] += length
        return self._keys.pop(-neg_arrival), length

    def next_row(self) -> list[tuple[int, int]] | None:
        pieces, remaining = [], self.capacity
        while remaining:
            self._refill()
            if not self._sorted:  # exhausted: the partial row cannot be completed without padding
                if self.crop or not pieces:
                    self.stats["dropped"] += self.capacity - remaining
                    return None
                break
            # Longest document with length <= remaining (and, among equals, the oldest).
            i = bisect_right(self._sorted, (remaining, 0)) - 1
            if i >= 0:
                key, length = self._take(i)
                pieces.append((key, length))
                remaining -= length
            elif not self.crop:  # nothing fits whole: close the row, the caller pads it
                break
            else:  # nothing fits whole: crop the shortest to fill the row exactly
                key, length = self._take(0)
                pieces.append((key, remaining))
                self.stats["cropped"] += length - remaining
                remaining = 0
        self.stats["rows"] += 1
        self.stats["padded"] += remaining
        return pieces

    def rows(self) -> Iterator[list[tuple[int, int]]]:
        while (row := self.next_row()) is not None:
            yield row

    def state_dict(self) -> dict:
        """The buffer (keys, lengths, arrival numbers) and counters; JSON-serialisable."""
        buffer = [[self._keys[-neg], length, -neg] for length, neg in self._sorted]
        return {"buffer": buffer, "arrivals": self._arrivals, "exhausted": self._exhausted, "stats": dict(self.stats)}

    def load_state_dict(self, state: dict) -> None:
        self._sorted = sorted((int(length), -int(arrival)) for _, length, arrival in state["buffer"])
        self._keys = {int(arrival): int(key) for key, _, arrival in state["buffer"]}
        self._arrivals = int(state["arrivals"])
        self._exhausted = bool(state["exhausted"])
        self.stats = {k: int(v) for k, v in state["stats"].items()}
