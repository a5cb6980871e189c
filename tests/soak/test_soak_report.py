"""The soak's text report (mixserve/soak/report.py) says how available the service stayed under
faults and whether that counted in the verdict."""
from mixserve.soak.availability import availability
from mixserve.soak.report import markdown


def report(served: dict, passed: bool) -> dict:
    summary = {"requests": 10, "statuses": {"200": 10}, "verdicts": {"ok": 10}, "wrong_texts": 0, "unexplained": 0,
               "faults": {"member_kill": 1, "pause": 0, "router_kill": 0, "disconnect": 0}, "router_lost": 0,
               "changed_after_crash": 0, "leaked_sessions": {"a": 0}, "memory_growth_max": 0.01, "memory": [],
               "memory_roles": [], "sessions": {"checked": 0, "wrong": 0, "advanced_by_a_lost_turn": 0, "problems": []},
               "prometheus": {"server_tokens": {}, "client_tokens": {}, "tokens_unheard": {},
                              "tokens_in_last_intervals": {}, "server_429": 0, "client_429": 0,
                              "429_in_last_intervals": 0, "agree": True},
               "unrecovered": [], "availability": served, "passed": passed}
    settings = {"duration_s": 100, "warmup_end_s": 40, "seed": 0, "topology": "scaled", "engines": {"a": "sim"},
                "retry_s": 5, "max_concurrent_sessions": 12}
    return {"summary": summary, "settings": settings, "problems": []}


def test_the_report_gives_the_silent_seconds_and_the_rate_against_the_warm_up():
    done = [10 + k / 10 for k in range(300)] + [50 + k / 4 for k in range(400) if not 60 <= 50 + k / 4 < 70]
    text = markdown(report(availability(done, (10, 40), (50, 150), required=True), passed=False))
    assert "# soak: FAILED" in text and "topology scaled" in text
    assert ("availability: 10 of the fault window's 100 s without a completed request (10.0%, target at most 5%); "
            "completed requests per second 3.6 during faults against 10 in the warm-up, ratio 0.36 "
            "(target at least 0.7): MISSED\n") in text


def test_a_miss_that_does_not_count_says_so():
    text = markdown(report(availability([], (10, 40), (50, 150), required=False), passed=True))
    assert "ratio none (nothing completed in the warm-up)" in text
    assert "MISSED (not part of the verdict: see --availability)" in text


def test_a_miss_fails_the_soak_only_when_availability_is_required():
    from types import SimpleNamespace

    from mixserve.soak.phases import _report

    base = report({}, passed=True)["summary"]
    soak = SimpleNamespace(faults=[], outcomes=[], seed=0, retry_s=5)
    setup = SimpleNamespace(max_sessions=12, engines={"a": "sim"})
    watch = SimpleNamespace(growth=lambda: [], roles=lambda: [{"name": "a", "growth": 0.0}], series=lambda: [])

    def passed(done: list[float], required: bool) -> bool:
        served = availability(done, (10, 40), (50, 150), required)
        return _report(soak, setup, base["faults"], {"ok": 10}, [], {"a": 0}, watch, base["prometheus"],
                       base["sessions"], served, 40, 100)["summary"]["passed"]

    steady = [10 + k / 10 for k in range(300)] + [50 + k / 10 for k in range(1000)]
    assert passed(steady, required=True)
    assert not passed(steady[:300], required=True)  # nothing completed under faults
    assert passed(steady[:300], required=False)
