"""The experts' skills (mixserve/eval/skills.py): answers that follow from the question by the worked
steps, splits that share no phrasing, name, thing or number range with training, and the eval's
reading of a worked reply."""
import json
import re
from datetime import datetime, timedelta

import yaml

from mixserve.eval.skills import CLOCK, NAMES, SKILLS, SPLITS, SUMS, THINGS, skill_rows
from mixserve.eval.tasks import EXPERT_TASKS, dev_split, write_tasks
from mixserve.models.expert import rows as training, settings_for

N = 400


def sentences(text: str) -> list[str]:
    return [s.strip() for s in re.findall(r"[^.?;]+[.?;]", text)]


FILLERS = re.compile(r"\b(" + "|".join(w for split in SPLITS for w in NAMES[split] + THINGS[split]) + r")\b")


def skeleton(sentence: str) -> str:
    """A sentence with its numbers, times, names and things taken out: what a template leaves."""
    return FILLERS.sub("@", re.sub(r"\d+:\d\d|\d+", "#", sentence))


def test_sums_answers_follow_from_the_question_by_the_worked_steps():
    ops = {"+": int.__add__, "-": int.__sub__, "*": int.__mul__, "/": int.__floordiv__}
    for split in SPLITS:
        used = set()
        for row in skill_rows("sums", split, N, 1):
            steps = re.findall(r"(\d+) ([-+*/]) (\d+) = (\d+)\.", row["worked"])
            assert len(steps) == 2 and " ".join(f"{a} {o} {k} = {r}." for a, o, k, r in steps) == row["worked"]
            start = int(re.search(r"\d+", row["question"])[0])
            total = start
            for a, op, k, r in steps:
                assert int(a) == total and (op != "/" or total % int(k) == 0)
                total = ops[op](total, int(k))
                assert int(r) == total >= 0
                used.add(op)
            # every number in the question is the start or a step's operand, in order
            assert [int(x) for x in re.findall(r"\d+", row["question"])] == [start] + [int(k) for _, _, k, _ in steps]
            assert row["answer"] == str(total)
        assert used == set("+-*/"), split


def test_clock_answers_are_the_time_that_long_after_or_before():
    for split in SPLITS:
        ways = set()
        for row in skill_rows("clock", split, N, 1):
            (h, m), (hours, mins) = re.search(r"(\d+):(\d\d)", row["question"]).groups(), \
                re.search(r"(\d) hours? and (\d+) minutes", row["question"]).groups()
            when = datetime(2026, 1, 1, int(h) % 12, int(m))
            after = any(t.format(name=n, t=f"{h}:{m}", d=f"{hours} hour{'s' * (hours != '1')} and {mins} minutes")
                        == row["question"] for t in CLOCK[split]["after"] for n in NAMES[split])
            ways.add(after)
            end = when + (1 if after else -1) * timedelta(hours=int(hours), minutes=int(mins))
            assert row["answer"] == f"{(end.hour - 1) % 12 + 1}:{end.minute:02d}"
            assert row["worked"].endswith(f"= {row['answer']}.")
        assert ways == {True, False}, split


def test_no_two_splits_share_a_phrasing_name_or_thing_and_training_shares_no_number_range():
    for skill in SKILLS:
        rows = {split: skill_rows(skill, split, N, 1) for split in SPLITS}
        shapes = {split: {skeleton(s) for r in rows[split] for s in sentences(r["question"])} for split in SPLITS}
        for i, split in enumerate(SPLITS):
            for other in SPLITS[i + 1:]:
                assert not shapes[split] & shapes[other], (skill, split, other)
        for split in SPLITS:
            words = set(re.findall(r"[A-Za-z]+", " ".join(r["question"] for r in rows[split])))
            for other in set(SPLITS) - {split}:
                assert not words & set(NAMES[other] + THINGS[other]), (skill, split, other)
        if skill == "sums":  # numbers in the question: 10-49 and factors 2-5 in training, 50-99 and 6-9 after
            numbers = {s: {int(x) for r in rows[s] for x in re.findall(r"\d+", r["question"])} for s in SPLITS}
            assert numbers["train"] <= set(range(2, 6)) | set(range(10, 50))
            assert numbers["eval"] | numbers["dev"] | numbers["heldout"] <= set(range(6, 10)) | set(range(50, 100))
        else:  # minutes of every time and duration: not a multiple of 5 in training, a multiple of 5 after
            minutes = {s: {int(x) for r in rows[s] for pair in re.findall(r":(\d\d)|(\d+) minutes", r["question"])
                           for x in pair if x} for s in SPLITS}
            assert all(m % 5 for m in minutes["train"])
            assert all(m % 5 == 0 and m for m in minutes["eval"] | minutes["dev"] | minutes["heldout"])


def test_the_dev_split_asks_three_phrasings_a_fold_each_never_an_eval_question_or_a_held_out_phrasing(tmp_path):
    dev = dev_split(suite="experts")
    assert {r["task"] for r in dev} == {"mixserve_sums", "mixserve_clock", "mixserve_mc"}
    for skill in SKILLS:  # 50 rows in each phrasing: the eval's (fold 0), the dev split's own, the training's
        folds = {fold: {skeleton(s) for r in dev if r["task"] == f"mixserve_{skill}" and r.get("fold") == fold
                        for s in sentences(r["prompt"].removeprefix("Question: ").split("\n")[0])} for fold in (0, 1, 2)}
        assert [len([r for r in dev if r["task"] == f"mixserve_{skill}" and r.get("fold") == f]) for f in (0, 1, 2)] \
            == [50, 50, 50]
        assert all(folds.values()) and not folds[0] & folds[1] and not folds[1] & folds[2] and not folds[0] & folds[2]
        trained = {r["prompt"] for r in training(settings_for(skill))}  # what `make experts` learnt from
        assert not trained & {r["prompt"] for r in dev}, skill
    assert all("fold" not in r for r in dev if r["task"] == "mixserve_mc")
    out = write_tasks(tmp_path)
    asked = {f"Question: {line}" for task in EXPERT_TASKS
             for line in (json.loads(x)["question"] for x in (out / f"{task}.jsonl").read_text().splitlines())}
    assert not {r["prompt"].removesuffix("\nAnswer:") for r in dev} & asked
    held = {skeleton(s) for skill in SKILLS for r in skill_rows(skill, "heldout", N, 1) for s in sentences(r["question"])}
    assert not {skeleton(s) for r in dev for s in sentences(r["prompt"].removeprefix("Question: ").split("\n")[0])} & held


def test_the_eval_reads_a_worked_reply_for_its_last_number_or_time(tmp_path):
    out = write_tasks(tmp_path, n=20)
    for task in EXPERT_TASKS:
        spec = yaml.safe_load((out / f"{task}.yaml").read_text())
        regex = spec["filter_list"][0]["filter"][0]
        assert regex["group_select"] == -1
        for line in (out / f"{task}.jsonl").read_text().splitlines():
            row = json.loads(line)
            assert re.findall(regex["regex_pattern"], f" {row['worked']}")[-1] == row["answer"]
            assert re.findall(regex["regex_pattern"], f" {row['answer']}")[-1] == row["answer"]  # a bare answer counts
