"""The generated evaluation tasks: the same files from the same seed, and answers that are right."""
import json
import re

import yaml

from mixserve.eval_tasks import write_tasks


def test_tasks_are_deterministic_and_parse_as_lm_eval_tasks(tmp_path):
    first, second = write_tasks(tmp_path / "1", n=30), write_tasks(tmp_path / "2", n=30)
    for task in ("mixserve_arith", "mixserve_facts", "mixserve_mc", "mixserve_text"):
        assert (first / f"{task}.jsonl").read_text() == (second / f"{task}.jsonl").read_text()
        spec = yaml.safe_load((first / f"{task}.yaml").read_text())
        assert spec["task"] == task and spec["dataset_kwargs"]["data_files"].endswith(f"{task}.jsonl")


def test_arithmetic_answers_follow_from_the_question(tmp_path):
    rows = [json.loads(line) for line in (write_tasks(tmp_path, n=50) / "mixserve_arith.jsonl").open()]
    for row in rows:
        total = int(re.search(r"has (\d+)", row["question"]).group(1))
        for verb, k in re.findall(r"(gets|gives away) (\d+)", row["question"]):
            total += int(k) if verb == "gets" else -int(k)
            assert total >= 0
        assert row["answer"] == str(total)


def test_fact_problems_need_the_fact_and_the_arithmetic(tmp_path):
    from mixserve.eval_tasks import FACTS

    rows = [json.loads(line) for line in (write_tasks(tmp_path, n=50) / "mixserve_facts.jsonl").open()]
    for row in rows:
        q = row["question"]
        fact = next(v for f, v in FACTS if f"there are {f}." in q)
        total = int(re.search(r"has (\d+)", q).group(1)) + (fact if "gets as many more" in q else -fact)
        total += sum(int(k) for k in re.findall(r"gets (\d+) more", q))
        assert total >= 0 and row["answer"] == str(total)


def test_each_multiple_choice_question_has_one_right_answer_among_four(tmp_path):
    rows = [json.loads(line) for line in (write_tasks(tmp_path, n=30) / "mixserve_mc.jsonl").open()]
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
    for row in rows:
        assert len(row["choices"]) == len(set(row["choices"])) == 4
        if m := re.match(r"(\w+) plus (\w+) equals", row["question"]):
            a, b = (words.index(w.lower()) for w in m.groups())
            assert row["choices"][row["label"]] == f" {words[a + b]}"
