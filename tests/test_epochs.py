"""Timestamps read as epoch seconds (queues/selectors/epochs.py) come back as the same microsecond
PostgreSQL holds: the sampler's catalog and the history read every time this way."""

from __future__ import annotations

import pytest

from queues.selectors.epochs import epoch_sql, moment
from tests.conftest import uses_databases

pytestmark = uses_databases


@pytest.mark.parametrize(
    "value",
    ["now()", "'2001-02-03 04:05:06.000001+00'", "'2026-12-08 00:44:36.999999+05:30'", "'2199-12-31 23:59:59.5+00'"],
)
def test_a_timestamp_read_as_epoch_seconds_is_the_same_microsecond(pgmq_sql, value):
    held, epoch = pgmq_sql.execute(f"SELECT t, {epoch_sql('t')} FROM (SELECT {value}::timestamptz AS t) v").fetchone()
    assert moment(epoch) == held
    assert moment(None) is None
