"""BestFitPacker: the plan equals a plain linear-scan statement of the rule, rows are exact, tokens are
accounted for, and the state restores the same continuation."""

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_nanogpt.data.packing import BestFitPacker


def reference_rows(lengths, capacity, buffer_size, crop=True):
    """The rule written as plainly as possible: a list buffer scanned linearly, oldest-first ties."""
    source = list(enumerate(lengths))
    buffer, rows = [], []  # buffer: (key, length) in arrival order
    while True:
        row, remaining = [], capacity
        while remaining:
            while source and len(buffer) < buffer_size:
                buffer.append(source.pop(0))
            if not buffer:
                break
            fits = [d for d in buffer if d[1] <= remaining]
            if fits:
                best = max(d[1] for d in fits)
                doc = next(d for d in buffer if d[1] == best)  # oldest of the longest fitting
                buffer.remove(doc)
                row.append(doc)
                remaining -= doc[1]
            elif not crop:
                break
            else:
                short = min(d[1] for d in buffer)
                doc = [d for d in buffer if d[1] == short][-1]  # newest of the shortest
                buffer.remove(doc)
                row.append((doc[0], remaining))
                remaining = 0
        if remaining and (crop or not row):
            return rows
        rows.append(row)


def packer_for(lengths, capacity, buffer_size, crop=True, start=0):
    it = iter(list(enumerate(lengths))[start:])
    return BestFitPacker(capacity, lambda: next(it, None), buffer_size, crop=crop)


@settings(max_examples=100, deadline=None)
@given(lengths=st.lists(st.integers(1, 40), min_size=0, max_size=80), capacity=st.integers(2, 33),
       buffer_size=st.integers(1, 12), crop=st.booleans())
def test_plan_matches_reference(lengths, capacity, buffer_size, crop):
    if not crop:
        lengths = [min(n, capacity) for n in lengths]
    packer = packer_for(lengths, capacity, buffer_size, crop)
    assert list(packer.rows()) == reference_rows(lengths, capacity, buffer_size, crop)


@settings(max_examples=100, deadline=None)
@given(lengths=st.lists(st.integers(1, 60), min_size=1, max_size=100), capacity=st.integers(2, 50),
       buffer_size=st.integers(1, 20))
def test_rows_exact_and_tokens_accounted(lengths, capacity, buffer_size):
    packer = packer_for(lengths, capacity, buffer_size)
    rows = list(packer.rows())
    seen = [key for row in rows for key, _ in row]
    assert len(seen) == len(set(seen)), "a document landed in two rows"
    for row in rows:
        assert sum(take for _, take in row) == capacity  # no padding
        for key, take in row[:-1]:
            assert take == lengths[key]  # only the last piece of a row may be cropped
        assert 1 <= row[-1][1] <= lengths[row[-1][0]]
    s = packer.stats
    # every token is in a row, cropped, or dropped with the last partial row
    assert len(rows) * capacity + s["cropped"] + s["dropped"] == sum(lengths)
    assert s["rows"] == len(rows) and s["docs"] == len(lengths) and s["doc_tokens"] == sum(lengths)


def test_crop_false_pads_instead():
    packer = packer_for([5, 5, 5], capacity=8, buffer_size=10, crop=False)
    assert list(packer.rows()) == [[(0, 5)], [(1, 5)], [(2, 5)]]
    assert packer.stats["padded"] == 9 and packer.stats["cropped"] == 0
    with pytest.raises(ValueError, match="document 1 has 9 tokens, more than a row"):
        list(packer_for([3, 9], capacity=8, buffer_size=10, crop=False).rows())


def test_state_round_trip_continues_identically():
    rng = random.Random(0)
    lengths = [rng.randint(1, 70) for _ in range(400)]
    full = list(packer_for(lengths, 64, 16).rows())
    for cut in (0, 1, 13, 57):
        first = packer_for(lengths, 64, 16)
        consumed = [0]

        def counting(it=iter(list(enumerate(lengths)))):
            doc = next(it, None)
            consumed[0] += doc is not None
            return doc

        first.next_doc = counting
        head = [first.next_row() for _ in range(cut)]
        state = json.loads(json.dumps(first.state_dict()))
        resumed = packer_for(lengths, 64, 16, start=consumed[0])
        resumed.load_state_dict(state)
        assert head + list(resumed.rows()) == full


def test_bad_arguments():
    with pytest.raises(ValueError, match="capacity must be at least 2"):
        BestFitPacker(1, lambda: None)
    with pytest.raises(ValueError, match="document 0 is empty"):
        packer_for([0], 8, 4).next_row()
