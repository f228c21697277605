"""`make test` runs the suite in several processes with pytest-xdist's `--dist loadgroup`: tests marked
with one xdist_group share a process, and so a module's costly servers (tests/test_faults.py's,
tests/test_package.py's wheel). pytest 9.2 with pytest-xdist 3.8 stopped it without a word."""

import pytest


@pytest.mark.xdist_group("grouping_check")
def test_a_group_is_kept_together(request):
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("the suite is not run with --dist loadgroup")
    assert request.node.nodeid.endswith("@grouping_check"), (
        "pytest-xdist's --dist loadgroup does not group tests with this pytest: see requirements-dev.txt"
    )
