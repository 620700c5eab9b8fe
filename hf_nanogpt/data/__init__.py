"""Data layer: pretraining corpora, BOS-aligned packing with exact resume, SFT batching.

- `corpus`: corpus specs (`stdlib`, local txt/jsonl/parquet with slices, hub ids) -> documents.
- `packing`: the best-fit packer (rows of T+1 tokens, every row starting with BOS).
- `pretrain`: `build_pretrain_loader` (tokenize with `datasets.map`, pack, shard, resume).
- `sft`: `build_sft_loader` (render conversations, pad or pack, assistant-only targets).
- `download`: first N parquet shards of a hub dataset.
"""

from .corpus import iter_stdlib_texts, iter_texts, load_corpus, parse_spec, stdlib_files
from .pretrain import PretrainLoader, build_pretrain_loader
from .sft import SFTLoader, build_sft_loader

__all__ = ["stdlib_files", "iter_stdlib_texts", "iter_texts", "load_corpus", "parse_spec", "PretrainLoader",
           "build_pretrain_loader", "SFTLoader", "build_sft_loader"]
