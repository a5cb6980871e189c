"""The tasks `mixserve eval` runs through lm-evaluation-harness, written from a seed into JSONL files
and task YAMLs: the same files every time, and nothing is downloaded.

- mixserve_arith (generate_until, exact match): two- and three-step arithmetic word problems.
- mixserve_arith2 (generate_until, exact match): harder ones: two-digit numbers, all four operations
  (divisions come out exact), one or two steps: where an arithmetic skill learnt on small numbers ends.
- mixserve_facts (generate_until, exact match): word problems whose numbers are common knowledge
  ("as many as there are days in a week"): a fact and arithmetic in one answer.
- mixserve_mc (multiple_choice, log-likelihood): opposites, capitals and number words.
- mixserve_text (loglikelihood_rolling, bits per byte): held-out sentences written for this project.
- mixserve_sums, mixserve_clock (generate_until, exact match on the reply's last number or time): the
  experts' skills (mixserve/eval/skills.py), and mixserve_sums_heldout, mixserve_clock_heldout: the
  same skills in phrasings that no dev or training row uses.

A suite is the tasks one eval runs and the mixed scores it reports: "default" for the shipped pairs,
"experts" for a base and its experts (cluster/experts.yaml).

The dev split (dev_split, `mixserve models dev-split`) is drawn by the same generators from another
seed, without the questions the eval asks: what ensemble weights are fitted on, so that the eval's
rows stay held out.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import yaml

from mixserve.eval import skills
from mixserve.eval.skills import GENERATORS, SKILLS, skill_rows

GENERATE_TASKS = ("mixserve_arith", "mixserve_facts", "mixserve_arith2")
SCORE_TASKS = ("mixserve_mc", "mixserve_text")  # need log-probs: one tokenizer
# The mixed suite (its mean accuracy): without mixserve_arith2, so that it means what it meant in the
# tables measured before that task existed.
MIXED = ("mixserve_arith", "mixserve_facts", "mixserve_mc")
EXPERT_TASKS = tuple(f"mixserve_{skill}{tail}" for tail in ("", "_heldout") for skill in SKILLS)


@dataclass(frozen=True)
class Suite:
    generate: tuple[str, ...]  # generate_until tasks: every row runs them
    score: tuple[str, ...]  # log-prob tasks: rows whose members share a tokenizer
    mixed: dict[str, tuple[str, ...]]  # each mixed score's name -> the accuracy tasks it is the mean of


SUITES = {
    "default": Suite(GENERATE_TASKS, SCORE_TASKS, {"mixed": MIXED}),
    # every expert's task and the general one; then the same with the phrasings no dev or training row has
    "experts": Suite(EXPERT_TASKS, SCORE_TASKS,
                     {"mixed": (*EXPERT_TASKS[:len(SKILLS)], "mixserve_mc"),
                      "mixed_heldout": (*EXPERT_TASKS[len(SKILLS):], "mixserve_mc")}),
}
SEED = 20261125  # the eval's rows
DEV_SEED = 20261127  # the dev split's (20261126 is the specialist's)
# The experts' dev split: the skills' splits whose phrasings it asks in, fold by fold. The held-out
# phrasing is never one; the training phrasing is drawn afresh from DEV_SEED, and none of its rows is one
# `make experts` trained on (tests/eval/test_skills.py checks the split as drawn).
DEV_PHRASINGS = ("eval", "dev", "train")

NAMES, THINGS = skills.NAMES["eval"], skills.THINGS["eval"]  # the experts' eval split asks with the same
OPPOSITES = [("hot", "cold"), ("big", "small"), ("up", "down"), ("day", "night"), ("fast", "slow"),
             ("happy", "sad"), ("open", "closed"), ("early", "late"), ("full", "empty"), ("light", "dark"),
             ("old", "young"), ("wet", "dry"), ("loud", "quiet"), ("hard", "soft"), ("high", "low"),
             ("rich", "poor"), ("thick", "thin"), ("strong", "weak"), ("push", "pull"), ("win", "lose")]
CAPITALS = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Germany", "Berlin"),
            ("Spain", "Madrid"), ("Egypt", "Cairo"), ("Russia", "Moscow"), ("Canada", "Ottawa"),
            ("Greece", "Athens"), ("Norway", "Oslo"), ("Kenya", "Nairobi"), ("Peru", "Lima"),
            ("China", "Beijing"), ("Portugal", "Lisbon"), ("Austria", "Vienna"), ("Ireland", "Dublin")]
FACTS = [("days in a week", 7), ("legs on a spider", 8), ("sides on a triangle", 3), ("sides on a square", 4),
         ("wheels on a bicycle", 2), ("months in a year", 12), ("legs on an insect", 6), ("eggs in a dozen", 12),
         ("fingers on one hand", 5), ("hours in a day", 24)]
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
HELD_OUT = [
    "The harbour was quiet before dawn, and the only sound was the slow knock of boats against the pier.",
    "She kept a small notebook in her coat pocket and wrote down every bird she saw on the way to work.",
    "When the rain finally stopped, the children ran outside to measure how deep the puddles had become.",
    "A good recipe tells you not only what to do but also what the dough should feel like when it is ready.",
    "The old bridge was closed for repairs, so the bus took a long detour through the hills behind the town.",
    "He learned to read the river by watching where the water moved fast and where it curled back on itself.",
    "Every autumn the library held a sale of used books, and the line outside started forming before noon.",
    "The map was drawn by hand, with small notes in the margins about wells, shortcuts and friendly farms.",
    "After three weeks of practice, the band could finally play the whole song without stopping once.",
    "The lighthouse keeper kept a log of every ship that passed, with the time, the weather and the flag.",
    "Most of the garden was given to potatoes and beans, but one corner was always kept for sunflowers.",
    "The train was late again, so the passengers shared newspapers and guessed at the cause of the delay.",
]


def _opening(rng: random.Random, low: int, high: int) -> tuple[str, str, int, str]:
    """Who, what and how many a word problem starts with, drawn in this order (the rows depend on it)."""
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    total = rng.randint(low, high)
    return name, thing, total, f"{name} has {total} {thing}."


def arithmetic(n: int, rng: random.Random) -> list[dict]:
    out = []
    for _ in range(n):
        name, thing, total, text = _opening(rng, 2, 9)
        for _ in range(rng.choice((2, 3))):
            if rng.random() < 0.5 or total < 2:
                k = rng.randint(1, 9)
                text += f" Then {name} gets {k} more."
                total += k
            else:
                k = rng.randint(1, total - 1)
                text += f" Then {name} gives away {k}."
                total -= k
        out.append({"question": f"{text} How many {thing} does {name} have now?", "answer": str(total)})
    return out


def arithmetic2(n: int, rng: random.Random) -> list[dict]:
    """One or two steps on a two-digit start: add or give away 10-99, multiply or divide by 2-9 (only
    exact divisions, and multiplication only below 100, so answers stay under 1,000). Not folded into
    arithmetic(): its draws, and so mixserve_arith's rows, must stay as they were."""
    out = []
    for _ in range(n):
        name, thing, total, text = _opening(rng, 10, 99)
        for _ in range(rng.choice((1, 2))):
            divisors = [k for k in range(2, 10) if total % k == 0]
            steps = ["add"] + ["take"] * (total > 10) + ["times"] * (total < 100) + ["split"] * bool(divisors)
            step = rng.choice(steps)
            if step == "add":
                k = rng.randint(10, 99)
                text += f" Then {name} gets {k} more."
                total += k
            elif step == "take":
                k = rng.randint(10, min(99, total - 1))
                text += f" Then {name} gives away {k}."
                total -= k
            elif step == "times":
                k = rng.randint(2, 9)
                text += f" Then {name} ends up with {k} times as many."
                total *= k
            else:
                k = rng.choice(divisors)
                text += f" Then {name} splits them into {k} equal groups and keeps one group."
                total //= k
        out.append({"question": f"{text} How many {thing} does {name} have now?", "answer": str(total)})
    return out


def facts(n: int, rng: random.Random) -> list[dict]:
    out = []
    for _ in range(n):
        name, thing = rng.choice(NAMES), rng.choice(THINGS)
        fact, value = rng.choice(FACTS)
        if rng.random() < 0.5:
            total = rng.randint(2, 9)
            text = f"{name} has {total} {thing}. Then {name} gets as many more as there are {fact}."
            total += value
        else:
            total = rng.randint(value + 1, value + 9)
            text = f"{name} has {total} {thing}. Then {name} gives away as many as there are {fact}."
            total -= value
        if rng.random() < 0.5:
            k = rng.randint(1, 9)
            text += f" Then {name} gets {k} more."
            total += k
        out.append({"question": f"{text} How many {thing} does {name} have now?", "answer": str(total)})
    return out


def multiple_choice(n: int, rng: random.Random) -> list[dict]:
    out = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            word, right = rng.choice(OPPOSITES)
            wrong = rng.sample([b for a, b in OPPOSITES if b != right], 3)
            question = f"The opposite of {word} is"
        elif kind == 1:
            country, right = rng.choice(CAPITALS)
            wrong = rng.sample([c for _, c in CAPITALS if c != right], 3)
            question = f"The capital of {country} is"
        else:
            a, b = rng.randint(0, 6), rng.randint(0, 6)
            right = WORDS[a + b]
            wrong = rng.sample([w for w in WORDS if w != right], 3)
            question = f"{WORDS[a].capitalize()} plus {WORDS[b]} equals"
        choices = [right] + wrong
        rng.shuffle(choices)
        out.append({"question": question, "choices": [f" {c}" for c in choices], "label": choices.index(right)})
    return out


def task_rows(n: int = 100, seed: int = SEED) -> dict[str, list[dict]]:
    """Each task's rows, n of each generated one. A task added later draws after the others, so that
    their rows (and the tables measured on them) stay as they were."""
    rng = random.Random(seed)
    data = {"mixserve_arith": arithmetic(n, rng), "mixserve_mc": multiple_choice(n, rng),
            "mixserve_text": [{"text": t} for t in HELD_OUT]}
    data["mixserve_facts"] = facts(n, rng)
    data["mixserve_arith2"] = arithmetic2(n, rng)
    for skill in SKILLS:  # each from its own seed (skill_rows)
        data[f"mixserve_{skill}"] = skill_rows(skill, "eval", n, seed)
        data[f"mixserve_{skill}_heldout"] = skill_rows(skill, "heldout", n, seed)
    return data


def write_tasks(out: Path, n: int = 100, seed: int = SEED) -> Path:
    """JSONL data and lm-eval task YAMLs under out/; the folder to pass to TaskManager(include_path)."""
    out.mkdir(parents=True, exist_ok=True)
    for task, rows in task_rows(n, seed).items():
        (out / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = lambda task: {"task": task, "dataset_path": "json", "test_split": "train",  # noqa: E731
                           "dataset_kwargs": {"data_files": str((out / f"{task}.jsonl").resolve())}}
    word_problem = {
        "output_type": "generate_until", "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["\n", "Question:"], "max_gen_toks": 12, "do_sample": False,
                              "temperature": 0},
        "filter_list": [{"name": "number", "filter": [{"function": "regex", "regex_pattern": r"(-?\d+)"},
                                                      {"function": "take_first"}]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}]}
    # The experts' tasks: a worked reply ("54 + 67 = 121. 121 - 58 = 63."), read for its last number or time.
    worked_problem = {**word_problem,
                      "generation_kwargs": {**word_problem["generation_kwargs"], "max_gen_toks": 40},
                      "filter_list": [{"name": "last", "filter": [
                          {"function": "regex", "regex_pattern": r"(\d+:\d\d|-?\d+)", "group_select": -1},
                          {"function": "take_first"}]}]}
    specs = {
        **{task: worked_problem for task in EXPERT_TASKS},
        "mixserve_arith": word_problem,
        "mixserve_arith2": word_problem,
        "mixserve_facts": word_problem,
        "mixserve_mc": {
            "output_type": "multiple_choice", "doc_to_text": "{{question}}", "doc_to_choice": "{{choices}}",
            "doc_to_target": "{{label}}", "target_delimiter": "",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]},
        "mixserve_text": {
            "output_type": "loglikelihood_rolling", "doc_to_text": "", "doc_to_target": "{{text}}",
            "metric_list": [{"metric": "bits_per_byte", "aggregation": "bits_per_byte", "higher_is_better": False}]},
    }
    for task, spec in specs.items():
        (out / f"{task}.yaml").write_text(yaml.safe_dump({**common(task), **spec}, sort_keys=False))
    return out


def dev_split(n_per_task: int = 100, seed: int = DEV_SEED, suite: str = "default") -> list[dict]:
    """Rows {task, prompt, completion} as the eval reads them: "Question: ...\\nAnswer:" and " 42\\n" for
    the word problems, the question and its right choice for mixserve_mc. No prompt is a question of
    the eval (at its default 100 examples a task) or repeats another. mixserve_mc has about 85
    distinct questions and the eval asks most of them: its dev rows are the few it does not.

    The experts' word problems carry the worked reply, n_per_task // 2 in each of three phrasings,
    each its own fold (DEV_PHRASINGS): the eval's (fold 0), the dev split's own (fold 1) and the
    training's (fold 2: its templates, names and numbers, drawn afresh; mixserve/eval/skills.py). The
    fit's cross-validation then scores each gate on a phrasing it was not fitted on, having fitted it
    on the other two. None is ever the held-out phrasing."""
    rng = random.Random(seed)
    asked = {row["question"] for rows in task_rows().values() for row in rows if "question" in row}
    word_problem = lambda row: (f"Question: {row['question']}\nAnswer:", f" {row['answer']}\n")  # noqa: E731
    worked = lambda row: (f"Question: {row['question']}\nAnswer:", f" {row['worked']}\n")  # noqa: E731
    choice = lambda row: (row["question"], row["choices"][row["label"]])  # noqa: E731
    if suite == "experts":
        tasks = [(f"mixserve_{skill}", lambda n, rng, g=GENERATORS[skill], split=split: g(n, split, rng), worked,
                  fold, n_per_task // 2 + (n_per_task % 2) * (fold == 0))
                 for skill in SKILLS for fold, split in enumerate(DEV_PHRASINGS)]
        tasks.append(("mixserve_mc", multiple_choice, choice, None, n_per_task))
    else:
        tasks = [("mixserve_arith", arithmetic, word_problem, None, n_per_task),
                 ("mixserve_arith2", arithmetic2, word_problem, None, n_per_task),
                 ("mixserve_facts", facts, word_problem, None, n_per_task),
                 ("mixserve_mc", multiple_choice, choice, None, n_per_task)]
    out = []
    for task, generate, as_pair, fold, n in tasks:
        # a fixed number of candidates: each task's rows depend only on the seed and n_per_task
        fresh = {row["question"]: row for row in generate(20 * n, rng) if row["question"] not in asked}
        for row in list(fresh.values())[:n]:
            prompt, completion = as_pair(row)
            out.append({"task": task, "prompt": prompt, "completion": completion,
                        **({"fold": fold} if fold is not None else {})})
    return out


def write_dev(path: str | Path, n_per_task: int = 100, seed: int = DEV_SEED, suite: str = "default") -> list[dict]:
    """The dev split as JSONL (one row a line); returns its rows."""
    rows = dev_split(n_per_task, seed, suite)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows
