"""Data layer: pretraining corpora, BOS-aligned packing with exact resume, SFT batching."""
