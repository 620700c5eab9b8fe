"""The pretraining loader: packing invariants on real tokens, rank sharding, exact resume, streaming."""

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from hf_nanogpt.data import build_pretrain_loader
from hf_nanogpt.data.packing import BestFitPacker
from hf_nanogpt.tokenization import get_encoder

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho".split()


def make_texts(n, seed=0):
    rng = random.Random(seed)
    return [f"doc {i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 24))) + "\n" for i in range(n)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A jsonl corpus of 80 distinct documents of ~10 to ~75 tokens, and a shared datasets cache."""
    root = tmp_path_factory.mktemp("pretrain")
    texts = make_texts(80)
    path = root / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return {"spec": f"{path}[:]", "texts": texts, "cache": root / "cache"}


def loader(corpus, tok, B=3, T=32, split="train", **kw):
    return build_pretrain_loader(corpus["spec"], tok, B, T, split, cache_dir=corpus["cache"], **kw)


def take(it, n):
    return [next(it) for _ in range(n)]


def doc_tokens(tok, texts):
    return [[tok.bos_token_id, *ids] for ids in get_encoder(tok)(texts)]


def segments(row, bos):
    """Split a packed row at its BOS tokens."""
    starts = [i for i, t in enumerate(row) if t == bos]
    return [row[a:b] for a, b in zip(starts, starts[1:] + [len(row)])]


def test_batches_are_bos_aligned_packed_rows(corpus, tiny_tokenizer):
    bos = tiny_tokenizer.bos_token_id
    batches = take(iter(loader(corpus, tiny_tokenizer, B=4, T=48, packing="crop")), 6)
    for b in batches:
        assert b["input_ids"].shape == b["shift_labels"].shape == (4, 48)
        assert b["input_ids"].dtype == b["shift_labels"].dtype == torch.int64
        assert (b["input_ids"][:, 0] == bos).all()  # every row starts a document
        assert torch.equal(b["input_ids"][:, 1:], b["shift_labels"][:, :-1])  # labels are the next tokens
        assert (b["shift_labels"] != -100).all()  # no padding anywhere


def test_crop_val_pass_accounts_for_every_token(corpus, tiny_tokenizer):
    docs = [tuple(d) for d in doc_tokens(tiny_tokenizer, corpus["texts"])]
    val = loader(corpus, tiny_tokenizer, B=2, T=40, split="val", packing="crop")
    rows = [r.tolist() for b in val for r in torch.cat([b["input_ids"], b["shift_labels"][:, -1:]], 1)]  # T+1
    whole, crops = [], []
    for row in rows:
        segs = [tuple(s) for s in segments(row, tiny_tokenizer.bos_token_id)]
        assert all(s in docs for s in segs[:-1])  # all but the last segment are whole documents
        (whole if segs[-1] in docs else crops).append(segs[-1])
        whole += segs[:-1]
    assert len(whole) == len(set(whole)), "a document appears twice in one pass"
    assert all(any(d[:len(c)] == c and d not in whole for d in docs) for c in crops)  # crops are unseen prefixes
    assert len(whole) + len(crops) >= len(docs) - 3  # only the documents of the final partial row are left out
    packer = val.packer.stats
    assert val.stats["rows"] == len(rows) == packer["rows"]
    # token accounting: rows + cropped + dropped with the final partial row == all document tokens
    assert len(rows) * 41 + packer["cropped"] + packer["dropped"] == sum(map(len, docs))
    assert val.stats["cropped_fraction"] == packer["cropped"] / packer["doc_tokens"]
    # a val loader is re-iterable: the next pass is the same
    again = [r.tolist() for b in val for r in torch.cat([b["input_ids"], b["shift_labels"][:, -1:]], 1)]
    assert again == rows


def test_stream_val_pass_is_the_corpus_token_stream(corpus, tiny_tokenizer):
    stream = [t for d in doc_tokens(tiny_tokenizer, corpus["texts"]) for t in d]  # val: corpus order
    val = loader(corpus, tiny_tokenizer, B=2, T=40, split="val", packing="stream")
    rows = [torch.cat([b["input_ids"], b["shift_labels"][:, -1:]], 1) for b in val]
    rows = [r.tolist() for b in rows for r in b]
    for i, row in enumerate(rows):  # row i = stream[40 i : 40 i + 41]: every token a target once
        assert row == stream[40 * i:40 * i + 41]
    assert len(stream) - (40 * len(rows) + 1) < 41 * 2  # at most the last partial row (and one undealt)
    assert val.stats["cropped_fraction"] == 0 and val.stats["packing"] == "stream"


def test_continue_val_pass_keeps_every_token(corpus, tiny_tokenizer):
    docs = doc_tokens(tiny_tokenizer, corpus["texts"])
    val = loader(corpus, tiny_tokenizer, B=2, T=40, split="val", packing="continue")
    rows = [r for b in val for r in torch.cat([b["input_ids"], b["shift_labels"][:, -1:]], 1).tolist()]
    s = val.packer.stats
    assert s["cropped"] == 0 and s["repeated"] > 0
    assert len(rows) * 41 + s["dropped"] == sum(map(len, docs)) + s["repeated"]
    # the rows are the packer's plan read from the documents at the pieces' offsets
    it = iter(enumerate(map(len, docs)))
    plan = BestFitPacker(41, lambda: next(it, None), val.buffer_size, mode="continue").rows()
    assert rows == [[t for p in row for t in docs[p.key][p.start:p.start + p.take]] for row in plan]


@pytest.mark.parametrize("packing", ["crop", "continue", "stream"])
def test_ranks_split_the_global_row_sequence(corpus, tiny_tokenizer, packing):
    for split in ("train", "val"):
        single = list(loader(corpus, tiny_tokenizer, B=4, split=split, packing=packing)) if split == "val" else \
            take(iter(loader(corpus, tiny_tokenizer, B=4, split=split, packing=packing)), 10)
        ranks = [loader(corpus, tiny_tokenizer, B=2, split=split, rank=r, world_size=2, packing=packing)
                 for r in range(2)]
        parts = [list(r) if split == "val" else take(iter(r), 10) for r in ranks]
        assert len(parts[0]) == len(parts[1])  # every rank runs the same number of steps
        if len(parts[0]) < len(single):  # a last val batch of one row cannot be dealt to two ranks
            assert len(parts[0]) == len(single) - 1 and len(single[-1]["input_ids"]) == 1
        for k, whole in zip(range(len(parts[0])), single):
            joined = torch.cat([parts[0][k]["input_ids"], parts[1][k]["input_ids"]])
            assert torch.equal(joined, whole["input_ids"][:len(joined)])
        if split == "val" and packing == "crop":  # no document is seen by both ranks
            bos = tiny_tokenizer.bos_token_id
            docs = [{tuple(s) for b in p for r in b["input_ids"].tolist() for s in segments(r, bos)[:-1]}
                    for p in parts]
            assert docs[0] and docs[1] and not docs[0] & docs[1]


@pytest.mark.parametrize("packing", ["crop", "continue"])
def test_train_epochs_reshuffle_and_continue(corpus, tiny_tokenizer, packing):
    train = loader(corpus, tiny_tokenizer, B=4, T=64, packing=packing)
    it = iter(train)
    first = take(it, 3)
    while train.stats["epoch"] < 3:
        next(it)
    assert train.stats["epoch"] == 3
    assert 0 < train.stats["cropped_fraction"] < 0.5 if packing == "crop" else train.stats["cropped_fraction"] == 0
    other_seed = take(iter(loader(corpus, tiny_tokenizer, B=4, T=64, seed=1)), 3)
    assert not all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, other_seed))


@pytest.mark.parametrize("packing", ["crop", "continue", "stream"])
@pytest.mark.parametrize("world_size, rank", [(1, 0), (2, 1)])
def test_exact_resume_at_several_cut_points(corpus, tiny_tokenizer, world_size, rank, packing):
    kw = dict(B=2, T=32, rank=rank, world_size=world_size, packing=packing)
    reference_loader = loader(corpus, tiny_tokenizer, **kw)
    n = {"crop": 60, "continue": 100, "stream": 130}[packing]  # crop drops tokens: shorter epochs
    reference = [b["input_ids"] for b in take(iter(reference_loader), n)]
    assert reference_loader.stats["epoch"] >= 2  # the cut points below cross epoch boundaries
    for cut in (0, 1, 7, 23, 41, n - 3):
        first = loader(corpus, tiny_tokenizer, **kw)
        it = iter(first)
        take(it, cut)
        state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint stores
        resumed = loader(corpus, tiny_tokenizer, **kw)
        resumed.load_state_dict(state)
        tail = [b["input_ids"] for b in take(iter(resumed), n - cut)]
        assert all(torch.equal(a, b) for a, b in zip(reference[cut:], tail)), f"resume at batch {cut} diverged"


def test_resume_with_another_batch_size_continues_the_row_sequence(corpus, tiny_tokenizer):
    reference = take(iter(loader(corpus, tiny_tokenizer, B=2)), 6)
    first = loader(corpus, tiny_tokenizer, B=2)
    take(iter(first), 2)
    bigger = loader(corpus, tiny_tokenizer, B=4)
    bigger.load_state_dict(first.state_dict())
    batch = next(iter(bigger))["input_ids"]
    assert torch.equal(batch, torch.cat([reference[2]["input_ids"], reference[3]["input_ids"]]))


def test_resume_refuses_a_different_setup(corpus, tiny_tokenizer):
    state = loader(corpus, tiny_tokenizer, T=32).state_dict()
    with pytest.raises(ValueError, match="saved with seq_len=32 but this loader has seq_len=16"):
        loader(corpus, tiny_tokenizer, T=16).load_state_dict(state)
    with pytest.raises(ValueError, match="saved with seed=0 but this loader has seed=3"):
        loader(corpus, tiny_tokenizer, T=32, seed=3).load_state_dict(state)
    with pytest.raises(ValueError, match="saved with packing='continue' but this loader has packing='stream'"):
        loader(corpus, tiny_tokenizer, T=32, packing="stream").load_state_dict(state)
    with pytest.raises(ValueError, match="packing mode 'random' is invalid"):
        loader(corpus, tiny_tokenizer, packing="random")


@pytest.mark.parametrize("packing", ["continue", "stream"])
def test_shorter_rows_keep_tokens_per_batch_and_resume(corpus, tiny_tokenizer, packing):
    """A sequence-length curriculum: rows of 8 then 16 then 32 tokens, the same tokens per batch."""
    def run(cut=None):
        ld = loader(corpus, tiny_tokenizer, B=2, T=32, packing=packing)
        out, it = [], None
        for i, t in enumerate([8, 8, 16, 16, 32, 32]):
            if i == cut:  # a checkpoint: a fresh loader from the saved state
                state = json.loads(json.dumps(ld.state_dict()))
                ld = loader(corpus, tiny_tokenizer, B=2, T=32, packing=packing)
                ld.load_state_dict(state)
                it = None
            ld.set_row_len(t)
            it = it or iter(ld)
            out.append(next(it)["input_ids"])
        return out, ld

    batches, ld = run()
    assert [tuple(b.shape) for b in batches] == [(8, 8), (8, 8), (4, 16), (4, 16), (2, 32), (2, 32)]
    assert ld.stats["tokens"] == 6 * 64
    if packing == "stream":  # one token stream whatever the row length: row k+1 starts at row k's last target
        flat = [r for b in batches for r in b.tolist()]
        assert all(a[1:] + [None] != b and True for a, b in zip(flat, flat[1:]))
    for cut in (1, 3):
        resumed, _ = run(cut)
        assert all(torch.equal(a, b) for a, b in zip(batches, resumed))
    with pytest.raises(ValueError, match="row length 12 must divide batch_size x seq_len = 2 x 32"):
        ld.set_row_len(12)


def test_bad_arguments_and_data(corpus, tiny_tokenizer, tmp_path):
    with pytest.raises(ValueError, match="rank 2 is outside"):
        loader(corpus, tiny_tokenizer, rank=2, world_size=2)
    with pytest.raises(FileNotFoundError, match="nope.jsonl does not exist"):
        build_pretrain_loader(str(tmp_path / "nope.jsonl"), tiny_tokenizer, 2, 16)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "oops"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl, line 2: the object has no 'text' field"):
        build_pretrain_loader(f"{bad}[:]", tiny_tokenizer, 2, 16, cache_dir=tmp_path / "c")


def test_stdlib_val_corpus(tiny_tokenizer, tmp_path_factory):
    val = build_pretrain_loader("stdlib", tiny_tokenizer, 4, 512, "val", cache_dir=tmp_path_factory.mktemp("std"))
    n = sum(1 for _ in val)
    assert n > 50 and val.stats["tokens"] == val.stats["rows"] * 512
    assert val.stats["cropped_fraction"] == 0 and val.stats["dropped_tokens"] < 4 * 513  # the default keeps all


@pytest.fixture(scope="module")
def stream_dir(tmp_path_factory):
    """A local folder of two parquet shards standing in for a hub dataset repository."""
    root = tmp_path_factory.mktemp("hubrepo")
    texts = make_texts(60, seed=1)
    for i in range(2):
        pq.write_table(pa.table({"text": texts[i * 30:(i + 1) * 30], "url": ["u"] * 30}), root / f"part-{i}.parquet")
    return root, texts


@pytest.mark.parametrize("packing", ["crop", "continue", "stream"])
def test_streaming_loader_resumes_exactly(stream_dir, tiny_tokenizer, packing):
    root, _ = stream_dir
    spec = f"hf:{root}"
    make = lambda: build_pretrain_loader(spec, tiny_tokenizer, 2, 32, buffer_size=8, packing=packing)  # noqa: E731
    reference_loader = make()
    reference = take(iter(reference_loader), 40)
    assert reference_loader.stats["epoch"] >= 1
    if packing == "crop":
        for b in reference:
            assert (b["input_ids"][:, 0] == tiny_tokenizer.bos_token_id).all()
    assert len(reference_loader.source.docs) <= 8 + 1  # tokens are released once their last piece is read
    for cut in (3, 17):
        first = make()
        take(iter(first), cut)
        resumed = make()
        resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
        tail = take(iter(resumed), 40 - cut)
        assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(reference[cut:], tail))


def test_streaming_ranks_read_disjoint_shards(stream_dir, tiny_tokenizer):
    root, texts = stream_dir
    docs = doc_tokens(tiny_tokenizer, texts)
    seen = []
    for rank in range(2):
        val = build_pretrain_loader(f"hf:{root}@train", tiny_tokenizer, 2, 32, "val", rank=rank, world_size=2)
        bos = tiny_tokenizer.bos_token_id
        segs = {tuple(s) for b in val for r in b["input_ids"].tolist() for s in segments(r, bos)}
        seen.append({i for i, d in enumerate(docs) for s in segs if len(s) > 8 and tuple(d[:len(s)]) == s})
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert seen[0] <= set(range(30)) and seen[1] <= set(range(30, 60))


def test_streaming_empty_corpus_is_an_error(tmp_path, tiny_tokenizer):
    pq.write_table(pa.table({"text": ["", ""]}), tmp_path / "empty.parquet")
    loader = build_pretrain_loader(f"hf:{tmp_path}", tiny_tokenizer, 2, 16)
    with pytest.raises(ValueError, match="the stream holds no non-empty document for this rank"):
        next(iter(loader))


def test_hub_spec_errors_name_the_problem(stream_dir, tiny_tokenizer):
    root, _ = stream_dir
    with pytest.raises(ValueError, match=r"cannot stream hub dataset .*split 'validation'; name another with @SPLIT"):
        build_pretrain_loader(f"hf:{root}", tiny_tokenizer, 2, 16, "val")
    notext = root.parent / "notext"
    notext.mkdir(exist_ok=True)
    pq.write_table(pa.table({"content": ["a"]}), notext / "x.parquet")
    with pytest.raises(ValueError, match=r"the hub dataset has no 'text' column \(columns: content\)"):
        build_pretrain_loader(f"hf:{notext}", tiny_tokenizer, 2, 16)
