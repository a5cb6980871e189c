"""`mixserve eval`'s mixture check against a served app: ME's one-token samples against the mixture
the ensemble's own log-probs give (members that share a tokenizer). The eval run in test_eval.py has
members with different tokenizers, where the check may find too few shared texts to test."""
from mixserve.eval.harness import CHECK_PROMPT
from mixserve.eval.check import mixture_check


def test_me_samples_pass_the_mixture_check_of_the_served_ensemble(server):
    check = mixture_check(server.http, "mixserve", {"a": 0.5, "b": 0.5}, CHECK_PROMPT, one_tokenizer=True, samples=300)
    # a correct server fails this once in a million runs (the seed is fixed)
    assert check["samples"] == 300 and check["categories"] >= 3 and check["passed"] is True
