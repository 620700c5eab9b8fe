"""What every chat task shares: the conversation schema, validation, loading, answer extraction.

A task is a `datasets.Dataset` of rows `{"messages": [...], <metadata columns>}` (`task.dataset`), plus
what an evaluator needs:

- `eval_type = "categorical"` (multiple choice): each row also has `letters` (the choice letters, in
  order) and `answer` (the correct letter); an evaluator scores the letters' logits after the prompt,
  the conversation without its final assistant message.
- `eval_type = "generative"`: `task.evaluate(row, completion_text) -> bool` judges a sampled answer;
  rows have `answer` (the reference, e.g. GSM8K's final number).

Message schema (the tokenizer's): `{"role": "system"|"user"|"assistant", "content": str | list[part]}`,
an assistant part is `{"type": "text"|"python"|"python_output", "text": str}` (python: a calculator call,
python_output: its result; "output" is accepted as another name for it). In a Dataset the `messages` column is `messages_feature()`, a list of
`datasets.Json` messages, so string contents and part lists share one column.
"""

import gzip
import json
import re
from pathlib import Path

MESSAGE_ROLES = ("system", "user", "assistant")
PART_TYPES = ("text", "python", "python_output", "output")  # python_output: nanochat's name for output
LETTERS = "ABCDEFGHIJ"


def messages_feature():
    """The `datasets` feature of a `messages` column: a list of `Json` values, one per message.

    Each message is a dict, so `datasets` always JSON-encodes it and the round trip is exact. (A `Json`
    value that is itself a string is stored verbatim when it parses as JSON, so `{"content": Json()}`
    would turn the content "4" into the number 4.)"""
    from datasets import Json, List

    return List(Json())


def check_conversation(messages, where: str = "conversation") -> None:
    """Raise ValueError naming `where` and the message index unless `messages` is a training
    conversation: an optional system message, then user/assistant turns alternating, ending with the
    assistant; string contents, except assistant content that may be a list of parts."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: expected a non-empty list of messages, got {messages!r:.80}")
    offset = 1 if isinstance(messages[0], dict) and messages[0].get("role") == "system" else 0
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"{where}: message {i} is not an object: {message!r:.80}")
        role, content = message.get("role"), message.get("content")
        if role not in MESSAGE_ROLES:
            raise ValueError(f"{where}: message {i} has role {role!r}, expected one of {', '.join(MESSAGE_ROLES)}")
        expected = "system" if i < offset else ("user" if (i - offset) % 2 == 0 else "assistant")
        if role != expected:
            raise ValueError(f"{where}: message {i} has role {role!r} where {expected!r} is expected "
                             "(an optional system message, then user and assistant alternating)")
        if isinstance(content, str):
            continue
        if role != "assistant" or not isinstance(content, list):
            raise ValueError(f"{where}: message {i} ({role}) content must be a string"
                             + (" or a list of parts" if role == "assistant" else "") + f", got {content!r:.80}")
        for j, part in enumerate(content):
            if (not isinstance(part, dict) or part.get("type") not in PART_TYPES
                    or not isinstance(part.get("text"), str)):
                raise ValueError(f'{where}: message {i}, part {j}: expected {{"type": "text"|"python"|"python_output", '
                                 f'"text": str}}, got {part!r:.80}')
    if len(messages) == offset or messages[-1]["role"] != "assistant":
        raise ValueError(f"{where}: the last message must be the assistant's")


def iter_jsonl(path: str | Path):
    """`(line number, row)` of a JSONL file, gzip-compressed when it ends in `.gz` (blank lines skipped);
    a line that is not a JSON object or array raises ValueError naming the file and line."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {lineno}: not valid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(row, (dict, list)):
                raise ValueError(f"{path}, line {lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def load_rows(hub_id: str, config: str | None, split: str, path: str | Path | None, required: tuple[str, ...]):
    """The raw rows of a task as a `datasets.Dataset`: from a local file in the hub schema (`.jsonl`,
    `.json`, `.parquet`) when `path` is given, else `load_dataset(hub_id, config, split=split)`.
    Checks that the columns in `required` exist, naming the source and the columns it has."""
    import datasets

    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"task data file {path} does not exist")
        if path.suffix == ".parquet":
            ds = datasets.Dataset.from_parquet(str(path))
        elif path.suffix in (".jsonl", ".json"):
            if path.suffix == ".jsonl":
                numbered = list(iter_jsonl(path))
            else:
                numbered = [(f"row {i + 1}", r) for i, r in enumerate(json.loads(path.read_text(encoding="utf-8")))]
            for where, row in numbered:
                missing = [k for k in required if not (isinstance(row, dict) and k in row)]
                if missing:
                    where = f"line {where}" if isinstance(where, int) else where
                    raise ValueError(f"{path}, {where}: missing {', '.join(missing)} (the hub schema of "
                                     f"{hub_id} has {', '.join(required)})")
            rows = [r for _, r in numbered]
            if not rows:
                raise ValueError(f"task data file {path} holds no rows")
            ds = datasets.Dataset.from_list(rows)
        else:
            raise ValueError(f"task data file {path}: unsupported extension {path.suffix!r} "
                             "(use .jsonl, .json or .parquet)")
        source = str(path)
    else:
        ds = datasets.load_dataset(hub_id, config, split=split)
        source = f"{hub_id} ({config or 'default'}, {split})"
    missing = [k for k in required if k not in ds.column_names]
    if missing:
        raise ValueError(f"{source}: missing column(s) {', '.join(missing)} (columns: {', '.join(ds.column_names)})")
    return ds


def rows_to_dataset(rows: list[dict]):
    """Python rows with a `messages` key -> a Dataset with `messages_feature()` (metadata types inferred)."""
    import datasets

    if not rows:
        raise ValueError("a task produced no rows")
    meta = datasets.Dataset.from_list([{k: v for k, v in r.items() if k != "messages"} for r in rows])
    features = datasets.Features({"messages": messages_feature(), **meta.features})
    return datasets.Dataset.from_dict({"messages": [r["messages"] for r in rows], **meta.to_dict()},
                                      features=features)


_ANSWER = re.compile(r"####\s*(-?[\d,]*\.?\d+)")


def extract_answer(text: str) -> str | None:
    """The number after the last `#### ` in `text`, thousands separators removed ("1,234" -> "1234"), or None."""
    found = _ANSWER.findall(text)
    return found[-1].replace(",", "") if found else None


def same_number(a: str | None, b: str | None) -> bool:
    """`a` and `b` are the same number ("5" == "5.0"), or the same string when not numbers."""
    if a is None or b is None:
        return False
    try:
        return float(a) == float(b)
    except ValueError:
        return a.strip() == b.strip()


def render_multiple_choice(question: str, letters: list[str], choices: list[str]) -> str:
    """The user prompt of a multiple-choice question; the answer is one letter."""
    lines = [question.strip(), ""] + [f"{letter}. {choice}" for letter, choice in zip(letters, choices)]
    return "\n".join(lines) + "\n\nAnswer with the letter of the correct choice."


class Task:
    """A chat task: `dataset` holds its rows; see the module docstring."""

    name = "task"
    eval_type = "generative"

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return self.dataset[index]

    def __iter__(self):
        return iter(self.dataset)

    def evaluate(self, row: dict, completion: str) -> bool:
        """Whether `completion` (the assistant's text) answers `row` correctly."""
        if self.eval_type == "categorical":
            return completion.strip().rstrip(".").strip() == row["answer"]
        return same_number(extract_answer(completion), row["answer"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rows={len(self)})"


def multiple_choice_row(question: str, choices: list[str], answer_index: int, **meta) -> dict:
    """A multiple-choice conversation row with `letters` and `answer` (the correct letter)."""
    if not 2 <= len(choices) <= len(LETTERS):
        raise ValueError(f"a multiple-choice question needs 2 to {len(LETTERS)} choices, got {len(choices)}")
    if not 0 <= answer_index < len(choices):
        raise ValueError(f"answer index {answer_index} is outside the {len(choices)} choices")
    letters = list(LETTERS[:len(choices)])
    messages = [{"role": "user", "content": render_multiple_choice(question, letters, choices)},
                {"role": "assistant", "content": letters[answer_index]}]
    return {"messages": messages, "letters": letters, "answer": letters[answer_index], **meta}
