"""The SmolLM2 arithmetic specialist's training problems (`mixserve models train-specialist`, which is
`train-expert`'s arith skill with the shipped settings, mixserve/models/expert.py SPECIALIST):
SmolLM2-135M-Instruct (the packaged GGUF, de-quantised through the cache) gets a LoRA adapter trained
on arithmetic word problems that this module generates from a seed.

The training problems share nothing with `mixserve eval`'s arithmetic tasks or the dev split
(mixserve/eval/tasks.py) but the arithmetic and the "Question: ...\\nAnswer:" frame the tasks ask in:
other names, other things, other sentences (tests/models/test_specialist.py checks it). The answer
comes first, as the tasks read the reply's first number.

A skill, not a range: most problems are on numbers up to 99 with all four operations (the kind
mixserve_arith2 asks), the rest are the small additions and subtractions of mixserve_arith, so that
the specialist keeps those.
"""
from __future__ import annotations

import random

from mixserve.eval.skills import NAMES as SPLIT_NAMES, THINGS as SPLIT_THINGS
from mixserve.eval.tasks import NAMES, THINGS

TRAIN_NAMES, TRAIN_THINGS = SPLIT_NAMES["train"], SPLIT_THINGS["train"]  # the experts' training names too
assert not set(TRAIN_NAMES) & set(NAMES) and not set(TRAIN_THINGS) & set(THINGS)
START = ["{name} owns {n} {thing}.", "At first {name} keeps {n} {thing} in a bag.", "A box holds {n} {thing}."]
ADD = ["{name} buys {k} more.", "A friend hands {name} {k} extra.", "{k} more are put in.", "{name} finds {k} more."]
TAKE = ["{name} sells {k}.", "{k} of them are lost.", "{name} uses up {k}.", "{k} are taken out."]
TIMES = ["Each one is swapped for {k} new ones.", "The count is multiplied by {k}.",
         "Every one of them turns into {k}."]
SPLIT = ["{name} divides them evenly into {k} piles and keeps one pile.", "The count is divided by {k}.",
         "They are packed into {k} bags of the same size, and only one bag is left."]
ASK = ["How many {thing} are there at the end?", "What is the number of {thing} now?",
       "How many {thing} remain?"]


def problems(n: int, seed: int) -> list[dict]:
    """n training problems (question, answer): three in ten are small (a start of 2-9, two or three
    additions or subtractions of 1-9), the rest start at 2-99 and take one or two steps: add 1-99,
    subtract less than what is there, multiply by 2-9 (only below 100, so answers stay under 1,000) or
    divide by 2-9 where it comes out exact."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        name, thing = rng.choice(TRAIN_NAMES), rng.choice(TRAIN_THINGS)
        small = rng.random() < 0.3
        total = rng.randint(2, 9) if small else rng.randint(2, 99)
        parts = [rng.choice(START).format(name=name, n=total, thing=thing)]
        for _ in range(rng.choice((2, 3) if small else (1, 2))):
            steps = ["add"] + ["take"] * (total > 1)
            if not small:
                divisors = [k for k in range(2, 10) if total % k == 0]
                steps += ["times"] * (total < 100) + ["split"] * bool(divisors)
            step = rng.choice(steps)
            if step == "add":
                k = rng.randint(1, 9 if small else 99)
                parts.append(rng.choice(ADD).format(name=name, k=k))
                total += k
            elif step == "take":
                k = rng.randint(1, total - 1)
                parts.append(rng.choice(TAKE).format(name=name, k=k))
                total -= k
            elif step == "times":
                k = rng.randint(2, 9)
                parts.append(rng.choice(TIMES).format(name=name, k=k))
                total *= k
            else:
                k = rng.choice(divisors)
                parts.append(rng.choice(SPLIT).format(name=name, k=k))
                total //= k
        parts.append(rng.choice(ASK).format(thing=thing))
        out.append({"question": " ".join(parts), "answer": str(total)})
    return out
