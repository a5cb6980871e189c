"""The experts' skills (issue 30, docs/evaluation.md "Experts of one base"): word problems that the
base answers badly in the eval's frame ("Question: ...\\nAnswer:", greedy, the reply's first line)
and that a LoRA adapter can learn as a skill, not a surface.

- sums: two steps of arithmetic on a count of things (add, take away, multiply, divide exactly).
- clock: the time on a 12-hour clock some hours and minutes after or before another.

The reply is worked, one step a clause ("54 + 67 = 121. 121 - 58 = 63."), and the eval reads its last
number or time: the base has the arithmetic (it gets most of these right when shown three worked
examples) but answers zero-shot with a guess, and an adapter trained on worked replies learns to
write the steps out. Each skill draws from four splits that share no sentence template, no name and
no thing, and whose numbers come from disjoint ranges between training and the rest:

- train: what `mixserve models train-expert` learns from (numbers 10-49 and factors 2-5 for sums;
  minutes that are not a multiple of 5 for clock), and a third of the dev split the gate is fitted on
  (drawn afresh, never a training row);
- eval: the eval's task and a third of the dev split (numbers 50-99, factors 6-9; minutes that are a
  multiple of 5);
- dev: the dev split's last third, in phrasings of its own (numbers as in eval); with each phrasing
  its own fold, fitting the gate measures how it carries to a phrasing it was not fitted on;
- heldout: the eval's held-out phrasings, numbers as in eval, that neither the dev split nor
  training ever shows.
"""
from __future__ import annotations

import random

SKILLS = ("sums", "clock")
SPLITS = ("train", "eval", "dev", "heldout")

# Who and what the problems are about, per split. The train lists are also the SmolLM2 specialist's
# (mixserve/models/specialist.py), the eval lists also the default suite's tasks' (mixserve/eval/tasks.py).
NAMES = {"train": ["Omar", "Pia", "Quinn", "Rosa", "Sami", "Tara", "Uma", "Vic", "Wes", "Yara", "Zoe", "Noor"],
         "eval": ["Ann", "Ben", "Cara", "Dev", "Ema", "Finn", "Gus", "Hana", "Ivo", "Jo", "Kai", "Lena"],
         "dev": ["Abel", "Bea", "Cyrus", "Dora", "Elif", "Farah", "Goran", "Hugo", "Iris", "Jana", "Kofi", "Lupe"],
         "heldout": ["Ravi", "Sofia", "Tom", "Ines", "Mateo", "Greta", "Liam", "Olga", "Pedro", "Nia"]}
THINGS = {"train": ["eggs", "bottles", "tickets", "stickers", "beads", "nails", "plums", "buttons"],
          "eval": ["apples", "books", "coins", "marbles", "pencils", "shells", "stamps", "cards"],
          "dev": ["lemons", "pebbles", "erasers", "magnets", "crayons", "feathers", "tokens", "gloves"],
          "heldout": ["oranges", "postcards", "candles", "ribbons", "keys", "cups", "seeds", "badges"]}

# sums: a start, two steps, a question. Per split: the numbers written in the question, the factors.
SUMS_NUMBERS = {"train": ((10, 49), (2, 5)), "eval": ((50, 99), (6, 9)), "dev": ((50, 99), (6, 9)),
                "heldout": ((50, 99), (6, 9))}
SUMS = {
    "train": {
        "start": ["{name} owns {n} {thing}.", "At first {name} keeps {n} {thing} in a bag.", "A box holds {n} {thing}.",
                  "{name} starts the day with {n} {thing}.", "There are {n} {thing} on {name}'s shelf."],
        "+": ["{name} buys {k} more.", "A friend hands {name} {k} extra.", "{k} more are put in.",
              "{name} finds {k} more.", "Later {name} is given another {k}."],
        "-": ["{name} sells {k}.", "{k} of them are lost.", "{name} uses up {k}.", "{k} are taken out.",
              "{name} gives {k} to a neighbour."],
        "*": ["Each one is swapped for {k} new ones.", "The count is multiplied by {k}.",
              "Every one of them turns into {k}."],
        "/": ["{name} divides them evenly into {k} piles and keeps one pile.", "The count is divided by {k}.",
              "They are packed into {k} bags of the same size, and only one bag is left."],
        "ask": ["How many {thing} are there at the end?", "What is the number of {thing} now?",
                "How many {thing} remain?"]},
    "eval": {
        "start": ["{name} has {n} {thing}.", "{name} collects {n} {thing}."],
        "+": ["Then {name} gets {k} more.", "Then {name} receives {k} {thing} as a gift."],
        "-": ["Then {name} gives away {k}.", "Then {name} drops {k} of them."],
        "*": ["Then {name} ends up with {k} times as many.", "Then the pile grows to {k} times its size."],
        "/": ["Then {name} splits them into {k} equal groups and keeps one group.",
              "Then {name} keeps only one of {k} equal parts."],
        "ask": ["How many {thing} does {name} have now?", "How many {thing} does {name} end up with?"]},
    "dev": {
        "start": ["{name} counts {n} {thing} in a drawer.", "A basket contains {n} {thing}."],
        "+": ["Someone brings {name} {k} further {thing}.", "{k} {thing} arrive by post."],
        "-": ["{name} loses {k} of the {thing}.", "{k} {thing} break and are thrown out."],
        "*": ["After that each of the {thing} is replaced by {k} of them.", "After that the stock grows {k}-fold."],
        "/": ["After that {name} puts them in {k} even stacks and keeps a single stack.",
              "After that the {thing} are dealt evenly to {k} players and {name} keeps one player's part."],
        "ask": ["What total of {thing} does {name} own in the end?", "How many {thing} is that in total?"]},
    "heldout": {
        "start": ["In the morning a jar holds {n} {thing}.", "{name}'s collection is {n} {thing}."],
        "+": ["After lunch {k} {thing} are added to it.", "An aunt adds {k} {thing} for {name}."],
        "-": ["In the evening {name} removes {k} {thing}.", "{name} trades away {k} {thing}."],
        "*": ["Next the amount becomes {k} times bigger.", "Next, for every one of them, {name} gets {k}."],
        "/": ["Next the {thing} are shared by {k} people and {name} keeps one share.",
              "Next only a {k}th of the {thing} is kept."],
        "ask": ["What is the final count of {thing}?", "How many {thing} are left for {name}?"]},
}

# clock: "the film starts at 3:40 and runs 2 hours and 35 minutes". Minutes of every time and duration
# in the question: not a multiple of 5 in training, a multiple of 5 (not 0) otherwise.
CLOCK = {
    "train": {
        "after": ["A bus leaves at {t} and the trip takes {d}. At what time does it arrive?",
                  "{name} starts baking at {t}. The bread needs {d}. When is it done?",
                  "A lesson begins at {t} and lasts {d}. At what time is it over?",
                  "The clock shows {t}. What time will it show {d} later?"],
        "before": ["{name} finished a run at {t} after running for {d}. At what time did the run start?",
                   "A parcel arrived at {t}, {d} after it was sent. When was it sent?",
                   "What time was it {d} before {t}?"]},
    "eval": {
        "after": ["{name} starts a film at {t}. The film is {d} long. At what time does it end?",
                  "A meeting starts at {t} and goes on for {d}. When does it end?"],
        "before": ["A train reaches the city at {t} after a journey of {d}. At what time did it set off?",
                   "{name} woke up at {t} after sleeping for {d}. When did {name} fall asleep?"]},
    "dev": {
        "after": ["A game kicks off at {t} and is played for {d}. When does the game finish?",
                  "{name} puts a cake in at {t} and takes it out {d} later. What time is that?"],
        "before": ["{name} landed at {t} after flying for {d}. At what time did the flight take off?",
                   "The shop closed at {t}, {d} after it opened. What time did it open?"]},
    "heldout": {
        "after": ["The oven timer is set at {t} for {d}. At what time will it ring?",
                  "If {name} begins reading at {t} and reads for {d}, what time is it when {name} stops?"],
        "before": ["{name} got home at {t}; the walk home took {d}. What time did {name} leave?",
                   "A concert ended at {t} and lasted {d}. When did it begin?"]},
}

OPS = {"+": lambda a, k: a + k, "-": lambda a, k: a - k, "*": lambda a, k: a * k, "/": lambda a, k: a // k}


def sums(n: int, split: str, rng: random.Random) -> list[dict]:
    """n problems {question, answer, worked}: a start, then two steps, the first adding or taking away,
    the second any of the four (multiplying only below 100, dividing only where it comes out exact)."""
    (low, high), (f_low, f_high) = SUMS_NUMBERS[split]
    text = SUMS[split]
    out = []
    for _ in range(n):
        name, thing = rng.choice(NAMES[split]), rng.choice(THINGS[split])
        total = rng.randint(low, high)
        parts, worked = [rng.choice(text["start"]).format(name=name, n=total, thing=thing)], []
        for step in range(2):
            ops = ["+"] + ["-"] * (total > low)
            if step:
                ops += ["*"] * (total < 100) + ["/"] * any(total % k == 0 for k in range(f_low, f_high + 1))
            op = rng.choice(ops)
            if op == "+":
                k = rng.randint(low, high)
            elif op == "-":
                k = rng.randint(low, min(high, total - 1))
            elif op == "*":
                k = rng.randint(f_low, f_high)
            else:
                k = rng.choice([k for k in range(f_low, f_high + 1) if total % k == 0])
            parts.append(rng.choice(text[op]).format(name=name, k=k, thing=thing))
            worked.append(f"{total} {op} {k} = {OPS[op](total, k)}.")
            total = OPS[op](total, k)
        parts.append(rng.choice(text["ask"]).format(name=name, thing=thing))
        out.append({"question": " ".join(parts), "answer": str(total), "worked": " ".join(worked)})
    return out


def clock(n: int, split: str, rng: random.Random) -> list[dict]:
    """n problems {question, answer, worked}: a time on a 12-hour clock, a duration of 1-5 hours and
    some minutes, and the time that long after or before it."""
    minutes = [m for m in range(1, 60) if (m % 5 != 0) == (split == "train")]
    out = []
    for _ in range(n):
        name = rng.choice(NAMES[split])
        hour, minute = rng.randint(1, 12), rng.choice(minutes)
        hours, mins = rng.randint(1, 5), rng.choice(minutes)
        way = rng.choice(("after", "before"))
        sign = 1 if way == "after" else -1
        start = f"{hour}:{minute:02d}"
        middle = _clock(hour * 60 + minute + sign * hours * 60)
        end = _clock(hour * 60 + minute + sign * (hours * 60 + mins))
        span = f"{hours} hour{'s' * (hours > 1)} and {mins} minutes"
        question = rng.choice(CLOCK[split][way]).format(name=name, t=start, d=span)
        op = "+" if sign > 0 else "-"
        worked = f"{start} {op} {hours} hour{'s' * (hours > 1)} = {middle}. {middle} {op} {mins} minutes = {end}."
        out.append({"question": question, "answer": end, "worked": worked})
    return out


def _clock(minutes: int) -> str:
    """Minutes since midnight (any integer) as a 12-hour clock reads them: 0 -> 12:00, 790 -> 1:10."""
    minutes %= 12 * 60
    return f"{(minutes // 60 - 1) % 12 + 1}:{minutes % 60:02d}"


GENERATORS = {"sums": sums, "clock": clock}


def skill_rows(skill: str, split: str, n: int, seed: int) -> list[dict]:
    """n rows of one skill's split, drawn from their own seed: a skill's rows never move when another
    skill or task is added."""
    if skill not in GENERATORS or split not in SPLITS:
        raise ValueError(f"no skill {skill!r} split {split!r}: skills are {', '.join(SKILLS)}, splits {', '.join(SPLITS)}")
    return GENERATORS[skill](n, split, random.Random(f"{seed}/{skill}/{split}"))
