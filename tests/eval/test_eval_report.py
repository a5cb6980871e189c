"""The eval report's paired differences: whether the ensemble is above a member is read from the
difference on the same questions, not from the overlap of the two rows' own intervals."""
import pytest

from mixserve.eval.report import markdown, paired


def row(**per_doc):
    return {t: {"metric": "exact_match", "value": sum(v) / len(v), "stderr": 0.1, "n": len(v), "per_doc": v}
            for t, v in per_doc.items()}


def test_a_paired_difference_is_the_mean_difference_with_its_own_standard_error():
    a = row(mixserve_arith=[1, 1, 0, 1], mixserve_facts=[0, 0, 0, 0], mixserve_mc=[1, 1, 1, 1])
    b = row(mixserve_arith=[1, 0, 0, 1], mixserve_facts=[0, 0, 0, 0], mixserve_mc=[1, 1, 1, 0])
    d = paired(a, b)
    # differences 0,1,0,0: mean 1/4, sample variance 1/4, standard error sqrt(1/4 / 4)
    assert d["mixserve_arith"] == {"diff": 0.25, "stderr": pytest.approx(0.25), "n": 4}
    assert d["mixserve_facts"]["diff"] == 0 and d["mixserve_facts"]["stderr"] == 0
    assert d["mixed"]["diff"] == pytest.approx(0.5 / 3)
    assert d["mixed"]["stderr"] == pytest.approx((0.25 ** 2 + 0.25 ** 2) ** 0.5 / 3)


def test_rows_that_answer_different_questions_are_not_paired():
    assert paired(row(mixserve_arith=[1, 0]), row(mixserve_arith=[1, 0, 1])) == {}
    assert "mixed" not in paired(row(mixserve_arith=[1, 0]), row(mixserve_arith=[0, 0]))


def test_the_table_says_above_only_where_the_interval_of_the_difference_excludes_zero():
    member = row(mixserve_arith=[0] * 50 + [1] * 50, mixserve_facts=[1, 0] * 50)
    ensemble = row(mixserve_arith=[1] * 30 + [0] * 20 + [1] * 50,  # 30 more right, none fewer
                   mixserve_facts=[1, 0] * 49 + [0, 1])  # one swapped each way
    report = {"rows": {"m": member, "me": ensemble}, "weights": {"m": 1.0}}
    table = markdown(report)
    line = next(line for line in table.splitlines() if line.startswith("| me − m |"))
    cells = [c.strip() for c in line.strip("|").split("|")][1:]
    assert cells[0].startswith("+0.300 ±") and cells[0].endswith("above")
    assert cells[1].startswith("+0.000 ±") and not cells[1].endswith(("above", "below"))
    assert "| m − " not in table  # members are not compared with each other


def test_the_experts_suite_reports_its_tasks_and_a_mixed_score_on_the_held_out_phrasings():
    from mixserve.eval.report import mixed
    from mixserve.eval.tasks import SUITES

    suite = SUITES["experts"]
    expert = row(mixserve_sums=[1, 1, 0, 1], mixserve_clock=[0] * 4, mixserve_sums_heldout=[1, 0, 0, 1],
                 mixserve_clock_heldout=[0] * 4, mixserve_mc=[1, 0, 1, 1])
    gated = row(mixserve_sums=[1, 1, 0, 1], mixserve_clock=[1, 1, 1, 0], mixserve_sums_heldout=[1, 0, 1, 1],
                mixserve_clock_heldout=[1, 1, 0, 0], mixserve_mc=[1, 0, 1, 1])
    d = paired(gated, expert, suite)
    assert d["mixed"]["diff"] == pytest.approx(0.75 / 3) and d["mixed_heldout"]["diff"] == pytest.approx(0.75 / 3)
    assert mixed(gated, suite.mixed["mixed_heldout"])["value"] == pytest.approx((0.75 + 0.5 + 0.75) / 3)
    for name, scores in (("sums", expert), ("me", gated)):
        for key, tasks in suite.mixed.items():
            scores[key] = mixed(scores, tasks)
    table = markdown({"suite": "experts", "rows": {"sums": expert, "me": gated}, "weights": {"sums": 1.0}})
    head = table.splitlines()[0]
    assert "clock, held-out phrasings" in head and "mixed suite, held-out phrasings" in head
    assert "two-digit arithmetic" not in head  # the default suite's tasks are not this table's
    diff = next(line for line in table.splitlines() if line.startswith("| me − sums |"))
    assert diff.count("|") == 2 + len(suite.generate) + 1 + len(suite.mixed)


def test_rows_rerun_after_a_refit_carry_the_rest_from_the_same_run_and_say_so(tmp_path):
    """`mixserve eval --rows me,ce`: the members' rows come from the eval.json already there, and only
    when it asked the same questions of the same config; a fixed-weights row only at the same weights."""
    import json

    from mixserve.eval.harness import carried

    plan = {"a": {"fields": {}}, "b": {"fields": {}}, "me": {"fields": {"method": "me"}},
            "me fixed": {"fields": {"method": "me", "weights": {"a": 0.5, "b": 0.5}}}}
    same = {"config": "pair.yaml", "suite": "experts", "limit": None, "examples_per_task": 60}
    before = {**same, "weights": {"a": 0.5, "b": 0.5},
              "rows": {n: row(mixserve_sums=[i % 2, 1]) for i, n in enumerate(plan)}}
    with pytest.raises(ValueError, match="does not exist: run every row once first"):
        carried(tmp_path, plan, ["me"], same, before["weights"])
    (tmp_path / "eval.json").write_text(json.dumps(before))
    kept = carried(tmp_path, plan, ["me"], same, before["weights"])
    assert kept == {n: before["rows"][n] for n in ("a", "b", "me fixed")}
    with pytest.raises(ValueError, match="examples_per_task 60 there, 100 here"):
        carried(tmp_path, plan, ["me"], {**same, "examples_per_task": 100}, before["weights"])
    with pytest.raises(ValueError, match="rows me fixed ran with the weights .* run them too"):
        carried(tmp_path, plan, ["me"], same, {"a": 0.4, "b": 0.6})
    assert set(carried(tmp_path, plan, ["me", "me fixed"], same, {"a": 0.4, "b": 0.6})) == {"a", "b"}
    with pytest.raises(ValueError, match="no row mf; this config's rows are a, b, me, me fixed"):
        carried(tmp_path, plan, ["mf"], same, before["weights"])
    table = markdown({**before, "rows": {**kept, "me": before["rows"]["me"]}, "carried": list(kept)})
    assert "Rows a, b, me fixed: carried from the run before" in table
