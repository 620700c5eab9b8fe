"""SmolTalk (HuggingFaceTB/smol-smoltalk): general chat conversations, nanochat's SFT staple.

Hub schema: `messages` (role/content strings, an optional leading system message), splits train and
test. Every conversation is validated; a malformed one raises naming its row.
"""

from .base import Task, check_conversation, load_rows, messages_feature


class SmolTalk(Task):
    name = "smoltalk"

    def __init__(self, split: str = "train", path=None):
        import datasets

        raw = load_rows("HuggingFaceTB/smol-smoltalk", None, split, path, ("messages",))

        def convert(row, index):
            check_conversation(row["messages"], where=f"smoltalk row {index}")
            return {"messages": [{"role": m["role"], "content": m["content"]} for m in row["messages"]]}

        ds = raw.map(convert, with_indices=True, remove_columns=raw.column_names,
                     features=datasets.Features({"messages": messages_feature()}), desc="smoltalk")
        super().__init__(ds)
