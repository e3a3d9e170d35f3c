"""litgpt_operator.outages: kopf's request back-off is bounded between tries and in all."""

from __future__ import annotations

from litgpt_operator.outages import BACKOFF_S


def test_the_back_off_is_bounded_between_tries_and_in_all():
    assert max(BACKOFF_S) == 5 and 240 <= sum(BACKOFF_S) <= 360
