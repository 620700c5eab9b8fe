"""MMLU (cais/mmlu): 57 subjects of multiple-choice questions, four choices each.

Splits: "train" (or "auxiliary_train") is the auxiliary_train set (~100k questions from other
multiple-choice datasets, what nanochat mid-trains on); "test", "validation" and "dev" come from the
"all" config.
Hub schema: `question`, `subject`, `choices` (4 strings), `answer` (index 0-3); auxiliary_train rows
may nest these under a `train` key. A local file may also be in the gauntlet format of the eval bundle
(`query` = "Question: ...\n(A) ... (B) ...", `choices` = letters, `gold` = index), as
`../shared/data/chat_eval/mmlu_small.jsonl` is.
"""

from .base import Task, load_rows, multiple_choice_row, rows_to_dataset


def _parse_gauntlet(query: str, letters: list[str], where: str) -> tuple[str, list[str]]:
    """Split a gauntlet query into the question and the text of each lettered choice."""
    first = query.rfind(f"\n({letters[0]}) ")
    if first < 0:
        raise ValueError(f"{where}: the query has no '({letters[0]}) ' choice list")
    question = query[:first].removeprefix("Question:").strip()
    rest, choices = query[first + 1:].strip(), []
    for letter, following in zip(letters, [*letters[1:], None]):
        rest = rest.removeprefix(f"({letter}) ")
        if following is None:
            choices.append(rest.strip())
            break
        head, sep, rest = rest.partition(f" ({following}) ")
        if not sep:
            raise ValueError(f"{where}: choice ({following}) is missing from the query")
        choices.append(head.strip())
        rest = f"({following}) " + rest
    return question, choices


class MMLU(Task):
    eval_type = "categorical"
    name = "mmlu"

    def __init__(self, split: str = "test", path=None):
        aux = split in ("train", "auxiliary_train")
        config, hub_split = ("auxiliary_train", "train") if aux else ("all", split)
        raw = load_rows("cais/mmlu", config, hub_split, path, ())
        gauntlet = {"query", "gold", "choices"} <= set(raw.column_names)
        hub = {"question", "choices", "answer"} <= set(raw.column_names) or "train" in raw.column_names
        if not gauntlet and not hub:
            raise ValueError(f"MMLU data ({path or 'cais/mmlu'}): expected question/choices/answer columns (hub) or "
                             f"query/choices/gold (gauntlet), got {', '.join(raw.column_names)}")
        rows = []
        for i, r in enumerate(raw):
            where = f"mmlu row {i}"
            if gauntlet:
                question, choices = _parse_gauntlet(r["query"], list(r["choices"]), where)
                answer, subject = int(r["gold"]), r.get("category", "")
            else:
                r = r.get("train") or r  # auxiliary_train nests the row
                question, choices, answer, subject = r["question"], r["choices"], int(r["answer"]), r.get("subject", "")
            rows.append(multiple_choice_row(question, list(choices), answer, subject=subject or ""))
        super().__init__(rows_to_dataset(rows))
