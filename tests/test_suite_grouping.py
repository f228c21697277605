"""`make test` runs the suite in several processes with pytest-xdist's `--dist loadgroup`: tests marked
with one xdist_group share a process, and so a module's costly servers (tests/test_faults.py's,
tests/test_package.py's wheel). pytest 9.2 with pytest-xdist 3.8 stopped it without a word."""

import random

import pytest

from perf.measuring import free_port


@pytest.mark.xdist_group("grouping_check")
def test_a_group_is_kept_together(request):
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("the suite is not run with --dist loadgroup")
    assert request.node.nodeid.endswith("@grouping_check"), (
        "pytest-xdist's --dist loadgroup does not group tests with this pytest: see requirements-dev.txt"
    )


def test_a_test_seeding_random_does_not_choose_the_next_servers_port():
    """Test processes pick their servers' ports at random. A test that seeds `random` for repeatable
    data (tests/test_small_screens.py) must not make every process that ran it pick the same ports,
    where one test's requests could reach another test's gunicorn."""
    state = random.getstate()
    try:
        random.seed(15)
        first = [free_port() for _ in range(5)]
        random.seed(15)
        second = [free_port() for _ in range(5)]
    finally:
        random.setstate(state)
    assert first != second
