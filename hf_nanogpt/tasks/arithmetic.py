"""Synthetic arithmetic with the calculator tool: "What is 37 * 12?" -> call, output, `#### 444`.

The assistant writes the expression as a calculator call (`<|python_start|>37 * 12<|python_end|>`),
the tool's output follows (given, not trained on), and the answer copies it after `#### `. Operands
have 1-3 digits; a quarter of the problems have three operands; operators are + - *. The format is
short and regular so a tiny model learns to route arithmetic through the tool. Rows come from
`random.Random(f"{seed}/{split}")`; evaluation compares the `#### N` number with the reference.
"""

import random

from ..calculator import use_calculator
from .base import Task, rows_to_dataset

_PROMPTS = ("What is {expr}?", "Calculate {expr}.", "{expr} = ?", "Compute {expr}")
_OPS = ("+", "-", "*")


def _operand(rng: random.Random) -> int:
    return rng.randint(0, 10 ** rng.randint(1, 3) - 1)


class Arithmetic(Task):
    name = "arithmetic"

    def __init__(self, split: str = "train", size: int = 1000, seed: int = 0):
        rng = random.Random(f"{seed}/{split}")
        rows = []
        for _ in range(size):
            terms = [str(_operand(rng))]
            for _ in range(2 if rng.random() < 0.25 else 1):
                terms += [rng.choice(_OPS), str(_operand(rng))]
            expr = " ".join(terms)
            output = use_calculator(expr)
            if output is None:
                raise AssertionError(f"calculator refused {expr!r}")
            rows.append({"messages": [{"role": "user", "content": rng.choice(_PROMPTS).format(expr=expr)},
                                      {"role": "assistant", "content": [
                                          {"type": "python", "text": expr}, {"type": "output", "text": output},
                                          {"type": "text", "text": f"#### {output}"}]}],
                         "answer": output})
        super().__init__(rows_to_dataset(rows))
