"""Generation quality against references: corpus BLEU and chrF with sacrebleu (`scripts/gen_eval.py`).

Data: a jsonl file, one object per line with `prompt` (str) and `reference` (a str, or a list of
str for several references; every row must then give the same number). Each prompt is answered by
the model with the generation engine (greedy by default), either as a chat turn (`chat`: the prompt
is the user message, the reply is the assistant's, tool blocks removed) or as a plain continuation
(`completion`: `<|bos|>` + prompt, the text generated after it).

Scores are sacrebleu's own corpus-level BLEU (its default `13a` tokenisation, exponential
smoothing) and chrF (character 6-grams, beta 2), each with sacrebleu's signature string, so the
numbers are comparable with any other sacrebleu report. `evaluate.load("bleu")` would fetch its
script from the Hub; sacrebleu runs offline.
"""

from pathlib import Path

from ..tasks.base import iter_jsonl


def load_pairs(path) -> list[dict]:
    """Rows `{"prompt": str, "references": [str, ...]}` of a jsonl file; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"generation data {path} does not exist")
    rows, n_refs = [], None
    for lineno, row in iter_jsonl(path):
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise ValueError(f"{path}, line {lineno}: expected an object with a string 'prompt'")
        refs = row.get("reference")
        refs = [refs] if isinstance(refs, str) else refs
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"{path}, line {lineno}: 'reference' must be a string or a non-empty list of strings")
        if n_refs is not None and len(refs) != n_refs:
            raise ValueError(f"{path}, line {lineno}: {len(refs)} references, but earlier rows have {n_refs} "
                             "(sacrebleu needs the same number for every row)")
        n_refs = len(refs)
        rows.append({"prompt": row["prompt"], "references": refs})
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def corpus_scores(hypotheses: list[str], references: list[list[str]]) -> dict:
    """sacrebleu corpus BLEU and chrF of `hypotheses` against `references` (one list of refs per hypothesis)."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    streams = [list(refs) for refs in zip(*references)]  # sacrebleu: one stream per reference index
    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    b = bleu.corpus_score(hypotheses, streams)
    c = chrf.corpus_score(hypotheses, streams)
    return {"BLEU": b.score, "chrF": c.score, "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature()), "bleu_precisions": list(b.precisions),
            "bleu_brevity_penalty": b.bp, "hypothesis_length": b.sys_len, "reference_length": b.ref_len}


def generate_texts(model, tokenizer, prompts: list[str], prompt_format: str = "chat", max_tokens: int = 64,
                   temperature: float = 0.0, seed: int = 0) -> list[str]:
    """One generation per prompt with the KV-cached engine (greedy at temperature 0)."""
    from ..engine import ChatTokens, Engine
    from ..tokenization import render_for_completion

    if prompt_format not in ("chat", "completion"):
        raise ValueError(f"prompt_format={prompt_format!r}: expected 'chat' or 'completion'")
    if prompt_format == "chat":
        engine = Engine.from_tokenizer(model, tokenizer)
    else:  # a base model: no tool, stop only at the next document (<|bos|>) or max_tokens
        bos = tokenizer.bos_token_id
        engine = Engine(model, ChatTokens(assistant_end=bos if bos is not None else -1, bos=bos))
    out = []
    for i, prompt in enumerate(prompts):
        if prompt_format == "chat":
            ids = render_for_completion(tokenizer, [{"role": "user", "content": prompt}])
        else:
            ids = ([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []) + tokenizer(
                prompt, add_special_tokens=False)["input_ids"]
        try:
            tokens, _ = engine.generate_batch(ids, max_tokens=max_tokens, temperature=temperature, seed=seed + i)
        except ValueError as err:  # e.g. a prompt longer than the context
            raise ValueError(f"prompt {i}: {err}") from None
        out.append(reply_text(tokenizer.decode(tokens[0], skip_special_tokens=False)))
    return out


def reply_text(text: str) -> str:
    """A generation as scored: calculator blocks (`<|python_start|>...<|output_end|>`) removed, stripped."""
    from ..engine import assistant_parts

    parts = assistant_parts(text)
    if isinstance(parts, list):  # only the reply's own text is compared with the reference
        parts = "".join(p["text"] for p in parts if p["type"] == "text")
    return parts.strip()


__all__ = ["corpus_scores", "generate_texts", "load_pairs", "reply_text"]
