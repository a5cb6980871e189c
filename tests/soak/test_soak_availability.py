"""The soak's availability (mixserve/soak/availability.py) on synthetic completion times: the seconds
of the fault window without a completed request, and the completion rate against the warm-up's."""
from mixserve.soak.availability import availability

WARMUP, FAULTS = (10.0, 40.0), (50.0, 150.0)  # 30 s of warm-up load, then 100 s of faults


def every(begin: float, end: float, per_s: int, skip: tuple[float, float] = (0, 0)) -> list[float]:
    """Completions `per_s` a second over [begin, end), none in `skip`."""
    times = [begin + k / per_s for k in range(int((end - begin) * per_s))]
    return [t for t in times if not skip[0] <= t < skip[1]]


def test_a_service_that_kept_answering_meets_both_targets():
    done = every(*WARMUP, 10) + every(*FAULTS, 9)
    a = availability(done, WARMUP, FAULTS, required=True)
    assert a["window_s"] == 100 and a["seconds_without_completion"] == 0
    assert a["warmup_per_s"] == 10 and a["faults_per_s"] == 9 and a["ratio"] == 0.9
    assert a["met"]


def test_an_outage_of_ten_seconds_in_a_hundred_misses_the_five_percent_target():
    done = every(*WARMUP, 10) + every(*FAULTS, 10, skip=(80.0, 90.0))
    a = availability(done, WARMUP, FAULTS, required=True)
    assert a["seconds_without_completion"] == 10 and a["share_without_completion"] == 0.1
    assert a["ratio"] == 0.9  # the rate alone would pass
    assert not a["met"]


def test_a_rate_halved_misses_the_ratio_target_though_no_second_was_silent():
    done = every(*WARMUP, 10) + every(*FAULTS, 5)
    a = availability(done, WARMUP, FAULTS, required=True)
    assert a["seconds_without_completion"] == 0 and a["ratio"] == 0.5 and not a["met"]


def test_today_single_copy_figures_miss_both():
    """The issue's measurement: 123 of 240 s silent, 10.7/s in the warm-up and 4.7/s under faults."""
    warmup, faults = (0.0, 30.0), (40.0, 280.0)
    silent = set(range(0, 240, 2)) | {1, 3, 5}  # 123 silent seconds
    lit = [s for s in range(240) if s not in silent]
    done = [30 * k / 321 for k in range(321)] + [40 + lit[k % len(lit)] + 0.5 for k in range(1128)]
    a = availability(done, warmup, faults, required=False)
    assert a["seconds_without_completion"] == 123 and a["share_without_completion"] == 0.5125
    assert a["warmup_per_s"] == 10.7 and a["faults_per_s"] == 4.7 and a["ratio"] == 0.439
    assert not a["met"] and not a["required"]  # reported; the verdict is the caller's to take


def test_only_the_window_s_whole_seconds_are_judged():
    # One completion at the window's first instant, one every second after; the window's last
    # half second is not a whole second, the warm-up's completions are not the window's.
    done = every(*WARMUP, 1) + [50.0 + k for k in range(20)] + [70.7]
    a = availability(done, WARMUP, (50.0, 70.5), required=True)
    assert a["window_s"] == 20 and a["seconds_without_completion"] == 0
    a = availability(done, WARMUP, (49.5, 70.5), required=True)  # [49.5, 50) held nothing
    assert a["window_s"] == 21 and a["seconds_without_completion"] == 1


def test_nothing_completed_in_the_warm_up_has_no_ratio_and_misses():
    a = availability(every(*FAULTS, 10), WARMUP, FAULTS, required=True)
    assert a["ratio"] is None and not a["met"]


def test_each_router_kill_gets_its_wait_until_the_next_completion():
    done = every(*WARMUP, 10) + every(*FAULTS, 10, skip=(60.0, 63.5))
    a = availability(done, WARMUP, FAULTS, required=True, router_kills=[60.0, 100.05])
    assert a["router_kill_to_next_completion_s"] == [3.5, 0.05]
