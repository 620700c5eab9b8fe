"""Shared test fixtures. Tests run on CPU with tiny configs; nothing touches the network."""

import os
from pathlib import Path

import pytest

from hf_nanogpt.paths import shared_data_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = shared_data_dir()


@pytest.fixture(autouse=True)
def one_thread():
    """Tests use tiny matrices, which gain nothing from threads, while OpenMP spin-waits make 2 threads on 2
    busy cores up to ~100x slower. Subprocesses (scripts, accelerate launch) keep their own settings."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` (real data for tests); skips the test with the reason when it is absent."""
    if SHARED_DATA is None or not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA or '../shared/data'} is absent "
                    "(set HF_NANOGPT_SHARED_DATA to point at it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


# ---- tokenizer fixtures (owner: tokenizer, hf_nanogpt/tokenization.py) -------------------------------
TINY_VOCAB_SIZE = 1024  # 256 bytes + 759 merges + 9 control tokens


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """A folder holding a byte-level BPE (vocab 1024) trained on ~1 MB of the stdlib corpus, saved with
    `save_pretrained` (tokenizer.json, tokenizer_config.json, chat_template.jinja). Trained once per session."""
    from hf_nanogpt.data.corpus import iter_stdlib_texts
    from hf_nanogpt.tokenization import train_tokenizer

    tokenizer = train_tokenizer(iter_stdlib_texts("train"), vocab_size=TINY_VOCAB_SIZE, max_chars=1_000_000)
    path = tmp_path_factory.mktemp("tiny_tokenizer")
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir):
    """`tiny_tokenizer_dir` loaded with `AutoTokenizer` (a `PreTrainedTokenizerFast`); shared, do not mutate."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
