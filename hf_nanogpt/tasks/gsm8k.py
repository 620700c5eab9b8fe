"""GSM8K (openai/gsm8k, config "main"): grade-school math word problems, solved with the calculator.

Hub schema: `question`, `answer`; the answer's `<<expr=result>>` marks become an assistant `python`
part (`expr`) followed by an `output` part (`result`), the text in between stays text, and the answer
ends with `#### N`. Evaluation is an exact match of the number after `#### ` in the completion with
the reference's (thousands separators ignored).
"""

import re

from .base import Task, extract_answer, load_rows, rows_to_dataset

_TOOL_MARK = re.compile(r"<<([^<>]*)>>")


def solution_parts(answer: str) -> list[dict]:
    """GSM8K's worked answer as assistant parts: text, and python/output for each `<<expr=result>>`."""
    parts, pos = [], 0
    for match in _TOOL_MARK.finditer(answer):
        if match.start() > pos:
            parts.append({"type": "text", "text": answer[pos:match.start()]})
        expr, sep, result = match.group(1).rpartition("=")
        if not sep:  # a mark without '=': keep it as text rather than invent a result
            parts.append({"type": "text", "text": match.group(0)})
        else:
            parts += [{"type": "python", "text": expr}, {"type": "output", "text": result}]
        pos = match.end()
    if pos < len(answer):
        parts.append({"type": "text", "text": answer[pos:]})
    return parts


class GSM8K(Task):
    name = "gsm8k"

    def __init__(self, split: str = "train", path=None):
        raw = load_rows("openai/gsm8k", "main", split, path, ("question", "answer"))
        rows = []
        for i, r in enumerate(raw):
            final = extract_answer(r["answer"])
            if final is None:
                raise ValueError(f"gsm8k row {i}: the answer has no '#### N' final line")
            rows.append({"messages": [{"role": "user", "content": r["question"]},
                                      {"role": "assistant", "content": solution_parts(r["answer"])}],
                         "answer": final})
        super().__init__(rows_to_dataset(rows))
