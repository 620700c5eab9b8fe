"""Packers: each mode's plan equals a plain statement of its rule, rows are exact, every token is accounted
for (and, outside crop mode, a target exactly once), and the state restores the same continuation."""

import json
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_nanogpt.data.packing import BestFitPacker, Piece, StreamPacker, make_packer


def reference_rows(lengths, capacity, buffer_size, mode="crop"):
    """The best-fit rules written as plainly as possible: a list buffer of (key, start, length) in arrival
    order, scanned linearly; oldest of the longest fitting placed, newest of the shortest split."""
    source = [(k, 0, n) for k, n in enumerate(lengths)]
    buffer, rows = [], []
    while True:
        row, remaining = [], capacity
        while remaining:
            while source and len(buffer) < buffer_size:
                buffer.append(source.pop(0))
            if not buffer:
                break
            fits = [d for d in buffer if d[2] <= remaining]
            if fits:
                doc = next(d for d in buffer if d[2] == max(f[2] for f in fits))
                buffer.remove(doc)
                row.append(Piece(*doc))
                remaining -= doc[2]
                continue
            if mode == "pad":
                break
            longest = max(d[2] for d in buffer)
            if mode == "continue" and longest > capacity:
                doc = next(d for d in buffer if d[2] == longest)  # oldest of the longest
            else:
                doc = [d for d in buffer if d[2] == min(d[2] for d in buffer)][-1]  # newest of the shortest
            buffer.remove(doc)
            row.append(Piece(doc[0], doc[1], remaining, last=mode == "crop"))
            if mode == "continue":  # the rest starts at the last token placed
                buffer.append((doc[0], doc[1] + remaining - 1, doc[2] - remaining + 1))
            remaining = 0
        if remaining and (mode != "pad" or not row):
            return rows
        rows.append(row)


def packer_for(lengths, capacity, buffer_size=8, mode="crop", start=0):
    it = iter(list(enumerate(lengths))[start:])
    return make_packer(mode, capacity, lambda: next(it, None), buffer_size) if mode != "pad" else \
        BestFitPacker(capacity, lambda: next(it, None), buffer_size, mode="pad")


def targets(rows):
    """(document, offset) of every in-context target: a token right after its own predecessor."""
    out = []
    for row in rows:
        tokens = [(p.key, p.start + j) for p in row for j in range(p.take)]
        out += [b for a, b in zip(tokens, tokens[1:]) if a == (b[0], b[1] - 1)]
    return out


def accounted(packer, rows, capacity):
    s = packer.stats
    return len(rows) * capacity - s["padded"] + s["cropped"] + s["dropped"] == s["doc_tokens"] + s["repeated"]


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 40), min_size=0, max_size=60), capacity=st.integers(2, 33),
       buffer_size=st.integers(1, 12), mode=st.sampled_from(["crop", "continue", "pad"]))
def test_best_fit_plan_matches_reference(lengths, capacity, buffer_size, mode):
    if mode == "pad":
        lengths = [min(n, capacity) for n in lengths]
    packer = packer_for(lengths, capacity, buffer_size, mode)
    rows = list(packer.rows())
    assert rows == reference_rows(lengths, capacity, buffer_size, mode)
    assert accounted(packer, rows, capacity)


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 60), min_size=1, max_size=60), capacity=st.integers(2, 50),
       buffer_size=st.integers(1, 16), mode=st.sampled_from(["crop", "continue", "stream"]))
def test_rows_are_exact_and_every_token_is_accounted_for(lengths, capacity, buffer_size, mode):
    packer = packer_for(lengths, capacity, buffer_size, mode)
    rows = list(packer.rows())
    for row in rows:
        assert sum(p.take for p in row) == capacity  # no padding
        assert all(p.start + p.take <= lengths[p.key] for p in row)
    assert accounted(packer, rows, capacity)
    s = packer.stats
    assert s["rows"] == len(rows) and s["docs"] == len(lengths) and s["doc_tokens"] == sum(lengths)
    seen = Counter(targets(rows))
    if mode == "crop":  # whole documents except a row's cropped last piece, never seen again
        keys = [p.key for row in rows for p in row]
        assert len(keys) == len(set(keys)), "a document landed in two rows"
        assert all(p.start == 0 for row in rows for p in row) and s["repeated"] == 0
    else:  # nothing cropped: every token after a document's BOS is an in-context target exactly once
        # (but those of the dropped last row); a continuation placed after another piece in a row also
        # serves once as a boundary target, as a BOS does
        assert s["cropped"] == 0 and max(seen.values(), default=1) == 1
        missing = [(k, j) for k, n in enumerate(lengths) for j in range(1, n) if (k, j) not in seen]
        assert len(missing) <= s["dropped"]


def test_stream_is_the_contiguous_token_sequence():
    lengths = [5, 1, 12, 3, 7, 2]
    stream = [(k, j) for k, n in enumerate(lengths) for j in range(n)]  # 30 tokens
    rows = list(packer_for(lengths, 8, mode="stream").rows())
    T = 7  # consecutive rows share one token: row i is stream[i*T : i*T + 8]
    assert len(rows) == (len(stream) - 1) // T == 4
    for i, row in enumerate(rows):
        assert [(p.key, p.start + j) for p in row for j in range(p.take)] == stream[i * T:i * T + 8]
    # a piece is `last` only where its document ends inside the row (its tokens are not needed again)
    assert [(p.key, p.last) for p in rows[0]] == [(0, True), (1, True), (2, False)]


def test_continue_reads_a_long_document_from_its_start_row_after_row():
    rows = list(packer_for([30, 3, 3], 10, buffer_size=3, mode="continue").rows())
    # the short documents fit first; the 30-token one fills the rest and continues, row after row
    assert rows == [[Piece(1, 0, 3), Piece(2, 0, 3), Piece(0, 0, 4, last=False)],
                    [Piece(0, 3, 10, last=False)], [Piece(0, 12, 10, last=False)]]
    assert sorted(targets(rows)) == [(0, j) for j in range(1, 22)] + [(1, 1), (1, 2), (2, 1), (2, 2)]


def test_row_capacity_can_change_between_rows():
    lengths = [random.Random(1).randint(1, 50) for _ in range(200)]
    for mode in ("crop", "continue", "stream"):
        packer = packer_for(lengths, 33, mode=mode)
        sizes = [9, 17, 33, 33, 17]
        rows = [packer.next_row(c) for c in sizes]
        assert [sum(p.take for p in r) for r in rows] == sizes


@pytest.mark.parametrize("mode", ["crop", "continue", "stream"])
def test_state_round_trip_continues_identically(mode):
    rng = random.Random(0)
    lengths = [rng.randint(1, 70) for _ in range(400)]
    full = list(packer_for(lengths, 64, 16, mode).rows())
    for cut in (0, 1, 13, 57):
        first = packer_for(lengths, 64, 16, mode)
        consumed = [0]

        def counting(it=iter(list(enumerate(lengths)))):
            doc = next(it, None)
            consumed[0] += doc is not None
            return doc

        first.next_doc = counting
        head = [first.next_row() for _ in range(cut)]
        state = json.loads(json.dumps(first.state_dict()))
        resumed = packer_for(lengths, 64, 16, mode, start=consumed[0])
        resumed.load_state_dict(state)
        assert head + list(resumed.rows()) == full


def test_pad_mode_pads_instead():
    packer = packer_for([5, 5, 5], capacity=8, buffer_size=10, mode="pad")
    assert list(packer.rows()) == [[Piece(0, 0, 5)], [Piece(1, 0, 5)], [Piece(2, 0, 5)]]
    assert packer.stats["padded"] == 9 and packer.stats["cropped"] == 0
    with pytest.raises(ValueError, match="document 1 has 9 tokens, more than a row"):
        list(packer_for([3, 9], capacity=8, buffer_size=10, mode="pad").rows())


def test_bad_arguments():
    with pytest.raises(ValueError, match="capacity must be at least 2"):
        BestFitPacker(1, lambda: None)
    with pytest.raises(ValueError, match="capacity must be at least 2"):
        StreamPacker(1, lambda: None)
    with pytest.raises(ValueError, match="packing mode 'shuffle' is invalid: expected one of crop, continue, stream"):
        make_packer("shuffle", 8, lambda: None)
    for mode in ("crop", "stream"):
        with pytest.raises(ValueError, match="document 0 is empty"):
            packer_for([0], 8, 4, mode).next_row()
    state = packer_for([3], 8, mode="crop").state_dict()
    with pytest.raises(ValueError, match="saved in mode 'crop', this packer is 'continue'"):
        packer_for([3], 8, mode="continue").load_state_dict(state)
