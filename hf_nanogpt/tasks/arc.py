"""ARC (AI2 Reasoning Challenge, allenai/ai2_arc): grade-school science questions, multiple choice.

Hub schema: `question`, `choices` = {`text`: [...], `label`: [...]}, `answerKey`; subsets "ARC-Easy"
and "ARC-Challenge", splits train / validation / test. A few rows label their choices "1".."4": they
are relabelled A..D by position so every row answers with a letter.
"""

from .base import Task, load_rows, multiple_choice_row, rows_to_dataset

SUBSETS = ("ARC-Easy", "ARC-Challenge")


class ARC(Task):
    eval_type = "categorical"

    def __init__(self, subset: str = "ARC-Easy", split: str = "train", path=None):
        if subset not in SUBSETS:
            raise ValueError(f"ARC subset {subset!r} is invalid: expected one of {', '.join(SUBSETS)}")
        self.name = "arc_easy" if subset == "ARC-Easy" else "arc_challenge"
        raw = load_rows("allenai/ai2_arc", subset, split, path, ("question", "choices", "answerKey"))
        rows = []
        for i, r in enumerate(raw):
            choices = r["choices"]
            if not isinstance(choices, dict) or "text" not in choices or "label" not in choices:
                raise ValueError(f"{self.name} row {i}: 'choices' must be {{'text': [...], 'label': [...]}}")
            if r["answerKey"] not in choices["label"]:
                raise ValueError(f"{self.name} row {i} ({r.get('id', '?')}): answerKey {r['answerKey']!r} is not "
                                 f"one of the labels {choices['label']}")
            rows.append(multiple_choice_row(r["question"], choices["text"], choices["label"].index(r["answerKey"]),
                                            id=str(r.get("id", i))))
        super().__init__(rows_to_dataset(rows))
