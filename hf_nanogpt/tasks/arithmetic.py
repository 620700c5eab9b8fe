"""Synthetic arithmetic with the calculator tool: "What is 37*12?" -> call, output, `#### 444`.

The assistant writes the expression as a calculator call (`<|python_start|>37*12<|python_end|>`),
the tool's output follows (given, not trained on), and the answer copies it after `#### `. Operands
have 1-3 digits; a quarter of the problems have three operands; operators are + - and
multiplication. The surface form varies as people write it, so that a question the model never saw
in exactly this form still reaches the calculator:

- spacing: `12 * 34` (half), `12*34` (a third), or mixed such as `12 *34`;
- operators: `*`, `x` or `×` for multiplication (the calculator reads all three);
- phrasing: a dozen question templates, lower or upper case first letter, with or without `?`;
- words: a two-operand problem is sometimes asked in words ("12 times 34", "12 plus 34").

The call copies the expression exactly as the question writes it (a copy is what a tiny model learns
fastest); an expression asked in words is called in symbols with spaces. Rows come from
`random.Random(f"{seed}/{split}")`; evaluation compares the `#### N` number with the reference.
"""

import random

from ..calculator import use_calculator
from .base import Task, rows_to_dataset

_PROMPTS = ("What is {expr}?", "What is {expr}", "What's {expr}?", "Calculate {expr}.", "Calculate {expr}",
            "Compute {expr}", "{expr} = ?", "{expr}=?", "{expr}?", "How much is {expr}?", "Evaluate {expr}.",
            "Please calculate {expr}.", "Can you work out {expr}?", "Solve {expr}")
_TIMES = ("*", "*", "x", "×")  # "*" twice: the most common way to write it
_WORDS = {"+": "plus", "-": "minus", "*": "times"}


def _operand(rng: random.Random) -> int:
    return rng.randint(0, 10 ** rng.randint(1, 3) - 1)


def _spacing(rng: random.Random):
    """How one expression is spaced: `12 * 34` (half the time), `12*34` (a third), or each gap drawn."""
    style = rng.choices(("spaced", "tight", "mixed"), weights=(5, 3, 2))[0]
    return lambda: {"spaced": " ", "tight": ""}.get(style) if style != "mixed" else rng.choice(("", " "))


def _question(rng: random.Random, expr: str) -> str:
    text = rng.choice(_PROMPTS).format(expr=expr)
    return text[0].lower() + text[1:] if rng.random() < 0.2 and text[0].isupper() else text


class Arithmetic(Task):
    name = "arithmetic"

    def __init__(self, split: str = "train", size: int = 1000, seed: int = 0):
        rng = random.Random(f"{seed}/{split}")
        rows = []
        for _ in range(size):
            operands = [_operand(rng) for _ in range(3 if rng.random() < 0.25 else 2)]
            ops = [rng.choice(("+", "-", "*")) for _ in operands[1:]]
            if len(operands) == 2 and rng.random() < 0.15:  # in words; the call is written in symbols
                shown = f"{operands[0]} {_WORDS[ops[0]]} {operands[1]}"
                expr = f"{operands[0]} {ops[0]} {operands[1]}"
            else:
                times, gap = rng.choice(_TIMES), _spacing(rng)
                expr = str(operands[0])
                for left, op, value in zip(operands, ops, operands[1:]):
                    sym = times if op == "*" else op
                    before, after = gap(), gap()
                    if sym == "x" and left == 0 and not before:  # "0x5" is a hexadecimal literal to the calculator
                        sym = "×"
                    expr += f"{before}{sym}{after}{value}"
                shown = expr
            output = use_calculator(expr)
            if output is None:
                raise AssertionError(f"calculator refused {expr!r}")
            rows.append({"messages": [{"role": "user", "content": _question(rng, shown)},
                                      {"role": "assistant", "content": [
                                          {"type": "python", "text": expr}, {"type": "output", "text": output},
                                          {"type": "text", "text": f"#### {output}"}]}],
                         "answer": output})
        super().__init__(rows_to_dataset(rows))
