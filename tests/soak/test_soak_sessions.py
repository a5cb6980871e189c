"""The soak's check of named sessions after the load (mixserve/soak/phases.py's `_sessions`), on outcomes
made by hand and a server that answers from a table: a continuation is compared with the quiet
replay of its turns, except where a turn's text already changed with a crash (the replay then has
another history, so the continuation is only required to be answered)."""
import asyncio

from mixserve.soak.load import Outcome
from mixserve.soak.phases import Soak


def turn(i, session, texts, prompt=None):
    spec = {"i": i, "n": 1, "session": session, "prompt": prompt, "max_tokens": 4}
    return Outcome(spec, i, i + 0.5, 200, texts=list(texts), finish=["length"])


class Server(Soak):
    """Answers a continuation with `continued`, and every quiet replay's turn with `replayed`."""

    def __init__(self, outcomes, continued, replayed):
        self.outcomes, self.continued, self.replayed = outcomes, continued, replayed

    async def _send_quiet(self, spec):
        replay = spec["session"].startswith("quiet-")  # _turn_reference's fresh session
        texts = self.replayed if replay else self.continued
        return Outcome(spec, 0, 0, 200, texts=list(texts), finish=["length"])


def check(turns, quiet_texts, continued, replayed):
    server = Server(turns, continued, replayed)
    quiet = {t.spec["i"]: Outcome(t.spec, 0, 0, 200, texts=list(q)) for t, q in zip(turns, quiet_texts)}
    return asyncio.run(server._sessions(quiet))


def test_a_continuation_unlike_the_quiet_replay_is_wrong():
    turns = [turn(1, "s", ["ab"], prompt="p"), turn(2, "s", ["cd"])]
    out = check(turns, [["ab"], ["cd"]], continued=["zz"], replayed=["ef"])
    assert out["wrong"] == 1 and out["after_a_changed_turn"] == 0


def test_a_continuation_like_the_quiet_replay_is_right():
    turns = [turn(1, "s", ["ab"], prompt="p"), turn(2, "s", ["cd"])]
    out = check(turns, [["ab"], ["cd"]], continued=["ef"], replayed=["ef"])
    assert out == {"checked": 1, "wrong": 0, "advanced_by_a_lost_turn": 0, "after_a_changed_turn": 0, "problems": []}


def test_after_a_turn_that_changed_with_a_crash_the_continuation_is_counted_apart():
    turns = [turn(1, "s", ["ab"], prompt="p"), turn(2, "s", ["cX"])]  # the quiet server wrote "cd"
    out = check(turns, [["ab"], ["cd"]], continued=["zz"], replayed=["ef"])
    assert out["wrong"] == 0 and out["after_a_changed_turn"] == 1
