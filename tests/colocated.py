"""What both engines' co-location tests ask a member (tests/actors/test_colocate.py, tests/test_vllm_colocate.py)."""
from mixserve.actors.messages import SamplingParams, Segment, StepRequest


def opening(engine, session, steps, seed, distribution=False):
    ids = tuple(engine.prompt_ids("the river runs under the stone"))
    return StepRequest(session, (Segment(ids=ids),), 0, steps, SamplingParams(seed=seed), distribution, fresh=True)


async def tokens(engine, req):
    return [t async for part in engine.step(req) for t in part.tokens]
