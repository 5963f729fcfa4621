"""The webhook deliveries' back-off (models.webhook_deliveries.backoff): 10 s doubling up to
an hour by default, and however short ``WEBHOOK_BACKOFF_BASE`` makes the first delay, a
delivery is still retried for three hours at least."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bulkjobs.settings import Settings
from models.webhook_deliveries import BACKOFF, MAX_DELAY, RETRIED_FOR, backoff


def test_the_default_back_off_is_eleven_retries_over_12310_seconds() -> None:
    """The figure the README gives: 10, 20, … 2560, 3600, 3600 s."""
    assert BACKOFF == (10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600)
    assert sum(BACKOFF) == 12_310 and Settings().webhook_backoff_base == 10


@pytest.mark.parametrize(("base", "retries"), [(0.5, 15), (0.01, 21), (10, 11), (3600, 3)])
def test_a_shorter_first_delay_gives_more_retries_never_less_time(base: float,
                                                                   retries: int) -> None:
    """Each delay doubles the one before up to an hour; they add up to three hours at least."""
    delays = backoff(base)
    assert len(delays) == retries and delays[0] == base
    assert all(b == min(2 * a, MAX_DELAY) for a, b in zip(delays, delays[1:], strict=False))
    assert sum(delays) >= RETRIED_FOR > sum(delays[:-1])


@pytest.mark.parametrize("value", ["0", "-1", "3601", "soon"])
def test_a_bad_webhook_backoff_base_is_refused(monkeypatch: pytest.MonkeyPatch,
                                               value: str) -> None:
    """WEBHOOK_BACKOFF_BASE is seconds, more than 0 and at most an hour."""
    monkeypatch.setenv("WEBHOOK_BACKOFF_BASE", value)
    with pytest.raises(ValidationError, match="WEBHOOK_BACKOFF_BASE"):
        Settings()
