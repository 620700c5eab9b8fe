"""CustomJSON: your own conversations, one per line of a JSONL file (nanochat's identity data).

Each line is `{"messages": [...]}` (the chat schema; other keys are ignored) or a bare list of
messages. Every conversation is validated; errors name the file and line.
"""

from pathlib import Path

from .base import Task, check_conversation, iter_jsonl, rows_to_dataset


class CustomJSON(Task):
    name = "customjson"

    def __init__(self, path):
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"CustomJSON file {path} does not exist")
        rows = []
        for lineno, row in iter_jsonl(path):
            messages = row.get("messages") if isinstance(row, dict) else row
            if messages is None:
                raise ValueError(f"{path}, line {lineno}: no 'messages' key (keys: {', '.join(row)})")
            check_conversation(messages, where=f"{path}, line {lineno}")
            rows.append({"messages": messages})
        if not rows:
            raise ValueError(f"CustomJSON file {path} holds no conversations")
        super().__init__(rows_to_dataset(rows))
