"""``stream.limits``: the per-connection request budget and the size of a replay, as plain
values (no sockets)."""

from __future__ import annotations

import pytest

from stream.limits import OpBudget, replay_size
from stream.protocol import Subscribe


def test_budget_serves_then_refuses_then_closes_within_one_second() -> None:
    """Up to the limit served, up to twice the limit refused, then close; a request a second
    after the window began starts a fresh window."""
    budget = OpBudget(3)
    verdicts = [budget.take(10.0 + i * 0.01) for i in range(7)]
    assert verdicts == ["serve"] * 3 + ["refuse"] * 3 + ["close"]
    assert budget.take(11.0) == "serve"


def test_budget_at_a_steady_pace_is_always_served() -> None:
    """A client that stays at the limit every second is never refused."""
    budget = OpBudget(2)
    assert {budget.take(t / 2) for t in range(100)} == {"serve"}


@pytest.mark.parametrize(("req", "cc_last", "p_last", "size"), [
    (Subscribe("p"), 100, 50, 0),
    (Subscribe("p", cc_cursor=90), 100, 50, 10),
    (Subscribe("p", cursor=45), 100, 50, 5),
    (Subscribe("p", cc_cursor=90, cursor=45), 100, 50, 15),
    (Subscribe("p", cc_cursor=90, cursor=45, jobs=frozenset({"t"})), 100, 50, 10),
    (Subscribe("*", cc_cursor=100), 100, None, 0),
])
def test_replay_size(req: Subscribe, cc_last: int, p_last: int | None, size: int) -> None:
    """Events after each given cursor, the project's only without a jobs filter."""
    assert replay_size(req, cc_last, p_last) == size
