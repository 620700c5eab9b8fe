"""Corpus specs: parsing, default and explicit splits, document rules, and every bad-data error."""

import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_nanogpt.data import corpus
from hf_nanogpt.data.corpus import iter_texts, load_corpus, parse_spec, split_documents


def write_jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def write_parquet(path, texts, column="text"):
    pq.write_table(pa.table({column: texts, "id": list(range(len(texts)))}), path)
    return path


@settings(max_examples=200, deadline=None)
@given(text=st.text(st.sampled_from("ab \n\t\r"), max_size=300), max_chars=st.integers(1, 40))
def test_split_documents_is_lossless_and_bounded(text, max_chars):
    docs = split_documents(text, max_chars)
    assert "".join(docs) == text
    assert all(0 < len(d) <= max_chars for d in docs)


def test_split_documents_prefers_blank_lines():
    text = "def f():\n    return 1\n\n\ndef g():\n    return 2\n"
    assert split_documents(text, 25) == ["def f():\n    return 1\n\n\n", "def g():\n    return 2\n"]
    assert split_documents(text, 1000) == [text]


def test_stdlib_split_is_disjoint_and_small():
    train, val = corpus.stdlib_files("train"), corpus.stdlib_files("val")
    assert train and val and not set(train) & set(val)
    assert sorted(train + val) == corpus.stdlib_files("all")
    assert 0.02 < len(val) / (len(train) + len(val)) < 0.09
    assert not any("-packages" in str(p) for p in train)
    with pytest.raises(ValueError, match="split='test' is invalid"):
        corpus.stdlib_files("test")


def test_txt_default_split_is_nanogpt_last_tenth(tmp_path):
    text = "".join(f"line {i}\n" + ("\n" if i % 7 == 0 else "") for i in range(3000))
    path = tmp_path / "input.txt"
    path.write_text(text)
    cut = int(len(text) * 0.9)
    train, val = "".join(iter_texts(str(path), "train")), "".join(iter_texts(str(path), "val"))
    assert train == text[:cut] and val == text[cut:]
    # explicit slices mean the same and are used as written for either split
    assert "".join(iter_texts(f"{path}[90%:]", "train")) == text[cut:]
    assert "".join(iter_texts(f"{path}[:90%]", "val")) == text[:cut]


def test_dataset_matches_plain_reading_across_files(tmp_path):
    for i in range(3):
        (tmp_path / f"part{i}.txt").write_text("".join(f"file {i} line {j}\n\n" for j in range(200)))
    spec = f"{tmp_path}/*.txt[30%:70%]"  # the cut counts characters of all files together
    texts = list(iter_texts(spec))
    assert "file 0" in texts[0] and "file 2" in texts[-1]
    assert load_corpus(spec, cache_dir=tmp_path / "cache")["text"] == texts


def test_shakespeare_slices(shared_data):
    path = shared_data / "corpus" / "tinyshakespeare.txt"
    text = path.read_text()
    cut = int(len(text) * 0.9)
    val = list(iter_texts(f"{path}[90%:]"))
    assert "".join(val) == text[cut:]
    assert all(len(d) <= corpus.DOC_CHARS for d in val)


def test_shards_default_split_is_nanochat_last_shard(tmp_path):
    for i in range(3):
        write_parquet(tmp_path / f"shard_{i:05d}.parquet", [f"doc {i}.{j}" for j in range(4)])
    train, val = parse_spec(str(tmp_path / "*.parquet"), "train"), parse_spec(str(tmp_path), "val")
    assert [p.name for p in train.files] == ["shard_00000.parquet", "shard_00001.parquet"]
    assert [p.name for p in val.files] == ["shard_00002.parquet"]
    assert list(iter_texts(str(tmp_path), "val")) == [f"doc 2.{j}" for j in range(4)]
    assert [p.name for p in parse_spec(f"{tmp_path}/*.parquet[1:2]").files] == ["shard_00001.parquet"]
    # a percentage cuts rows of all files together
    assert list(iter_texts(f"{tmp_path}/*.parquet[:50%]")) == [f"doc {i}.{j}" for i in range(2) for j in range(4)][:6]


def test_jsonl_rows_and_slices(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [f"doc {i}" for i in range(10)] + [""])
    assert list(iter_texts(f"{path}[20%:40%]")) == ["doc 2", "doc 3"]
    ds = load_corpus(f"{path}[:]", cache_dir=tmp_path / "cache")
    assert ds["text"] == [f"doc {i}" for i in range(10)]  # the empty document is dropped


def test_hub_specs_parse_without_network():
    s = parse_spec("hf:HuggingFaceFW/fineweb-edu:sample-10BT@train")
    assert (s.kind, s.repo, s.config, s.hub_split) == ("hub", "HuggingFaceFW/fineweb-edu", "sample-10BT", "train")
    s = parse_spec("karpathy/fineweb-edu-100b-shuffle", "val")
    assert (s.kind, s.repo, s.config, s.hub_split) == ("hub", "karpathy/fineweb-edu-100b-shuffle", None, "validation")
    with pytest.raises(ValueError, match="hub datasets take no slice"):
        parse_spec("hf:a/b[:10%]")


def test_cache_follows_file_changes(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", ["one", "two"])
    assert load_corpus(f"{path}[:]", cache_dir=tmp_path / "cache")["text"] == ["one", "two"]
    write_jsonl(path, ["one", "two", "three!"])
    assert load_corpus(f"{path}[:]", cache_dir=tmp_path / "cache")["text"] == ["one", "two", "three!"]


@pytest.mark.parametrize("spec, error, message", [
    ("", ValueError, "is empty"),
    ("{tmp}/missing.txt", FileNotFoundError, "missing.txt does not exist"),
    ("data/missing.jsonl", FileNotFoundError, "data/missing.jsonl does not exist"),  # not a hub id
    ("{tmp}/nothing*.parquet", FileNotFoundError, "no file matches the pattern"),
    ("{tmp}/data.csv", ValueError, "unsupported extension '.csv'"),
    ("{tmp}/a.txt[1:50%]", ValueError, "mix of integer and percentage bounds"),
    ("{tmp}/a.txt[x:]", ValueError, "slice bound 'x' is invalid"),
    ("{tmp}/a.txt[5:]", ValueError, "selects none of the 1 matched files"),
    ("stdlib[:10%]", ValueError, "stdlib corpus takes no slice"),
])
def test_bad_specs(tmp_path, spec, error, message):
    (tmp_path / "data.csv").write_text("a,b\n")
    (tmp_path / "a.txt").write_text("hello\n")
    with pytest.raises(error, match=message):
        parse_spec(spec.format(tmp=tmp_path))


@pytest.mark.parametrize("line, message", [
    ("{not json", r"c\.jsonl, line 3: not valid JSON"),
    ('["a list"]', r"c\.jsonl, line 3: expected a JSON object with a 'text' field, got list"),
    ('{"content": "x"}', r"c\.jsonl, line 3: the object has no 'text' field \(keys: content\)"),
    ('{"text": 5}', r"c\.jsonl, line 3: 'text' must be a string, got int"),
])
def test_bad_jsonl_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "ok"}\n\n' + line + "\n")  # the blank line still counts
    with pytest.raises(ValueError, match=message):
        list(iter_texts(f"{path}[:]"))
    with pytest.raises(ValueError, match=message):
        load_corpus(f"{path}[:]", cache_dir=tmp_path / "cache")


def test_parquet_without_text_column(tmp_path):
    path = write_parquet(tmp_path / "s.parquet", ["a"], column="content")
    with pytest.raises(ValueError, match=r"s\.parquet: parquet file has no 'text' column \(columns: content, id\)"):
        list(iter_texts(str(path)))


def test_empty_corpus(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", ["", ""])
    with pytest.raises(ValueError, match=r"c\.jsonl\[:\] \(train\)' is empty: no non-empty document in .*c\.jsonl"):
        load_corpus(f"{path}[:]", cache_dir=tmp_path / "cache")


def test_non_utf8_bytes_are_replaced_and_reported(tmp_path, caplog):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\u00e9 cr\u00e8me\n".encode("latin-1"))
    with caplog.at_level(logging.WARNING, logger="hf_nanogpt.data.corpus"):
        docs = list(iter_texts(f"{path}[:]"))
    assert docs == ["caf\ufffd cr\ufffdme\n"]
    assert "latin1.txt: 2 byte(s) are not valid UTF-8 (first at byte 3); replaced by U+FFFD" in caplog.text
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with caplog.at_level(logging.WARNING, logger="hf_nanogpt.data.corpus"):
        assert list(iter_texts(f"{jsonl}[:]")) == ["ok", "caf\ufffd"]
    assert "bad.jsonl, line 2: 1 byte(s) are not valid UTF-8" in caplog.text
