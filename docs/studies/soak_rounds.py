"""Ten rounds of the short soak after every other test of the suite, the rest in the suite's order
(docs/studies/vllm-first-use.md, "After the fix"):

    PYTHONPATH=docs/studies .venv/bin/python -m pytest -q -p soak_rounds --junitxml=rounds.xml
"""
import pytest

NAME = "test_a_short_soak_loses_nothing"


def pytest_generate_tests(metafunc):
    if metafunc.function.__name__ == NAME:
        metafunc.fixturenames.append("soak_round")
        metafunc.parametrize("soak_round", range(1, 11), indirect=True)


@pytest.fixture
def soak_round(request):
    return request.param


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: item.originalname == NAME)  # stable: the rest keep their order
