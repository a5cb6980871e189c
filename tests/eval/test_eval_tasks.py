"""The generated evaluation tasks: the same files from the same seed, answers that are right, and a
dev split that asks none of the eval's questions."""
import hashlib
import json
import re
import subprocess
import sys

import yaml

from mixserve.eval.tasks import dev_split, write_dev, write_tasks


def test_tasks_are_deterministic_and_parse_as_lm_eval_tasks(tmp_path):
    first, second = write_tasks(tmp_path / "1", n=30), write_tasks(tmp_path / "2", n=30)
    for task in ("mixserve_arith", "mixserve_arith2", "mixserve_facts", "mixserve_mc", "mixserve_text"):
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


def test_a_new_task_leaves_the_rows_of_the_earlier_ones_as_they_were(tmp_path):
    # docs/evaluation.md's tables were measured on these files (100 examples a task); a task added later must
    # draw its rows after theirs.
    before = {"mixserve_arith": "b624955d3ca52643ea8cc0335ccc6ba2ce3419d732fee51535c5136f87fec96a",
              "mixserve_facts": "396577307f6487ab28af272a569f999ea5b8035e09d3925aacc410b57c501edc",
              "mixserve_mc": "9efa3a4c1e348f10e72ed90a6a8a2ee3c66fd4a0af49c45150704d295b7f88f7",
              "mixserve_text": "b25da66cf11c1290626821c9157ff423f819548ce6602826b0d1f56fb40f5d80"}
    out = write_tasks(tmp_path)
    assert {t: hashlib.sha256((out / f"{t}.jsonl").read_bytes()).hexdigest() for t in before} == before


def test_harder_arithmetic_answers_follow_from_the_question(tmp_path):
    rows = [json.loads(line) for line in (write_tasks(tmp_path, n=200) / "mixserve_arith2.jsonl").open()]
    seen = set()
    for row in rows:
        q = row["question"]
        total = int(re.search(r"has (\d+)", q).group(1))
        assert 10 <= total <= 99
        steps = re.findall(r"Then \w+ (gets|gives away|ends up with|splits them into) (\d+)", q)
        assert 1 <= len(steps) <= 2
        for verb, k in steps:
            k = int(k)
            seen.add(verb)
            if verb in ("gets", "gives away"):
                assert 10 <= k <= 99
                total += k if verb == "gets" else -k
            elif verb == "ends up with":
                assert 2 <= k <= 9
                total *= k
            else:
                assert 2 <= k <= 9 and total % k == 0  # no remainders
                total //= k
            assert total >= 0
        assert row["answer"] == str(total)
    assert seen == {"gets", "gives away", "ends up with", "splits them into"}


def test_fact_problems_need_the_fact_and_the_arithmetic(tmp_path):
    from mixserve.eval.tasks import FACTS

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


def test_the_dev_split_asks_none_of_the_eval_questions(tmp_path):
    out = write_tasks(tmp_path, n=100)  # what `mixserve eval` writes by default
    asked = {}
    for task in ("mixserve_arith", "mixserve_arith2", "mixserve_facts"):
        asked[task] = {f"Question: {json.loads(line)['question']}\nAnswer:" for line in (out / f"{task}.jsonl").open()}
    asked["mixserve_mc"] = {json.loads(line)["question"] for line in (out / "mixserve_mc.jsonl").open()}
    rows = dev_split()
    for task, questions in asked.items():
        prompts = [r["prompt"] for r in rows if r["task"] == task]
        assert prompts and not set(prompts) & questions, task
    assert len({r["prompt"] for r in rows}) == len(rows)  # no prompt twice
    assert sum(r["task"] != "mixserve_mc" for r in rows) == 300  # mc has fewer questions the eval leaves


def test_the_dev_split_is_deterministic_and_answers_as_the_eval_reads_answers(tmp_path):
    rows = write_dev(tmp_path / "dev.jsonl", n_per_task=40)
    assert [json.loads(line) for line in (tmp_path / "dev.jsonl").open()] == rows == dev_split(40)
    for row in rows:
        if row["task"] == "mixserve_mc":
            assert re.fullmatch(r" \w+", row["completion"]) and row["prompt"].endswith((" is", " equals"))
        else:  # the eval's answer: a space, the number, the newline its generation stops at
            assert re.fullmatch(r" \d+\n", row["completion"]) and row["prompt"].endswith("\nAnswer:")
    for row in rows:
        if m := re.fullmatch(r"(\w+) plus (\w+) equals", row["prompt"]):
            words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                     "twelve"]
            assert row["completion"] == f" {words[words.index(m[1].lower()) + words.index(m[2])]}"


def test_mixserve_models_dev_split_writes_the_dev_split(tmp_path):
    cli = [sys.executable, "-m", "mixserve", "models", "dev-split"]
    done = subprocess.run([*cli, "--out", str(tmp_path / "dev.jsonl")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in (tmp_path / "dev.jsonl").open()] == dev_split()
    assert "mixserve_arith2: 100" in done.stdout
    missing = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "models dev-split needs --out FILE.jsonl" in missing.stderr
