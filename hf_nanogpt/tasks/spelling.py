"""Synthetic spelling tasks on words from the built-in corpus (offline, any size, deterministic).

The word list is every lowercase word of 3-10 letters that occurs at least `MIN_COUNT` times in the
stdlib corpus (identifiers and comment words alike) with a vowel and no letter tripled. As in nanochat,
every split draws from the whole list and only the random stream differs, so test rows are mostly
words seen in training: the tasks measure whether a small model learned the skill at all (a held-out
word list is the harder, generalisation version; a ~2M-parameter model trained for minutes scores near
zero on it).

- SimpleSpelling: "Spell apple" -> "a p p l e" (letters separated by spaces). Teaches the letters of
  tokens, which a BPE model otherwise never sees. The request is phrased several ways ("How do you
  spell apple?", 'Spell "apple"', ...). Evaluated by exact match.
- SpellingBee: 'How many r in "strawberry"?' -> the calculator call `"strawberry".count("r")`, its
  output, then `#### 3`. The model has to copy the word and the letter into the call and the tool's
  result into the answer: short, regular, learnable by a tiny model. Eight phrasings, the letter bare
  or quoted. Evaluated on the `#### N` number.

Rows are generated from `random.Random(f"{seed}/{split}")`, so a longer task extends a shorter one.
"""

import functools
import random
import re
import string
from collections import Counter

from ..calculator import use_calculator
from .base import Task, extract_answer, rows_to_dataset, same_number

MIN_COUNT = 10
SIMPLE_SPELLING_WORDS = 300  # the most frequent words: spellings a tiny model can memorise in minutes
_WORD = re.compile(r"\b[a-z]{3,10}\b")
# The word is quoted as in the tool call, so its tokens there are the same as in the question (a
# copy, not a re-spelling: byte-level BPE splits ' word' and '"word' differently).
_BEE_PROMPTS = ('How many {letter} in "{word}"?', 'How many times does {letter} appear in "{word}"?',
                'Count the letter {letter} in "{word}".', 'How many {letter} are there in "{word}"?',
                'how many {letter} in "{word}"', 'In "{word}", how many {letter}?',
                'Count {letter} in "{word}"', 'Number of {letter} in "{word}"?')
_LETTER_QUOTES = ("{}", "{}", '"{}"', "'{}'")  # r, "r" or 'r'
# Surface forms of the spelling request (the word's tokens differ after a space, a quote or a dot: a
# model trained on one form only fails on the others).
_SPELL_PROMPTS = ("Spell {word}", "Spell {word}", "Spell {word}.", "spell {word}", "How do you spell {word}?",
                  "Spell the word {word}.", 'Spell "{word}"', "Spell out {word}", "What are the letters of {word}?")


@functools.lru_cache(maxsize=None)
def corpus_words() -> tuple[str, ...]:
    """The word list, most frequent first (one scan of the stdlib corpus per process)."""
    from ..data.corpus import iter_stdlib_texts

    counts = Counter()
    for text in iter_stdlib_texts("all"):
        counts.update(_WORD.findall(text))
    ranked = sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))
    return tuple(word for word, count in ranked
                 if count >= MIN_COUNT and set(word) & set("aeiouy") and not re.search(r"(.)\1\1", word))


class SimpleSpelling(Task):
    name = "simple_spelling"

    def __init__(self, split: str = "train", size: int = 1000, seed: int = 0):
        rng, words = random.Random(f"{seed}/{split}"), corpus_words()[:SIMPLE_SPELLING_WORDS]
        rows = []
        for _ in range(size):
            word = rng.choice(words)
            letters = " ".join(word)
            rows.append({"messages": [{"role": "user", "content": rng.choice(_SPELL_PROMPTS).format(word=word)},
                                      {"role": "assistant", "content": letters}], "answer": letters})
        super().__init__(rows_to_dataset(rows))

    def evaluate(self, row: dict, completion: str) -> bool:
        return completion.strip() == row["answer"]


class SpellingBee(Task):
    name = "spelling_bee"

    def __init__(self, split: str = "train", size: int = 1000, seed: int = 0):
        rng, words = random.Random(f"{seed}/{split}"), corpus_words()
        rows = []
        for _ in range(size):
            word = rng.choice(words)
            # mostly letters of the word; sometimes any letter, so that 0 is a possible answer
            letter = rng.choice(word) if rng.random() < 0.7 else rng.choice(string.ascii_lowercase)
            call = f'"{word}".count("{letter}")'
            output = use_calculator(call)
            if output != str(word.count(letter)):
                raise AssertionError(f"calculator gave {output!r} for {call}")  # keeps data and tool in sync
            shown = rng.choice(_LETTER_QUOTES).format(letter)
            prompt = rng.choice(_BEE_PROMPTS).format(letter=shown, word=word)
            rows.append({"messages": [{"role": "user", "content": prompt},
                                      {"role": "assistant", "content": [
                                          {"type": "python", "text": call}, {"type": "output", "text": output},
                                          {"type": "text", "text": f"#### {output}"}]}],
                         "answer": output})
        super().__init__(rows_to_dataset(rows))

    def evaluate(self, row: dict, completion: str) -> bool:
        return same_number(extract_answer(completion), row["answer"])
