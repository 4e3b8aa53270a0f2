"""The claim schedule over partitions: pure logic, on given monotonic times."""

from __future__ import annotations

from perseid_jobs.store.script_io import Claimed, ClaimedTask
from perseid_jobs.worker.turns import ROTATE_EVERY, ClaimTurns


def task(n: int, slots: int = 1) -> ClaimedTask:
    return ClaimedTask(f"t{n}", "hello", "{}", "1", "0", "0", "1000", str(slots), None, None,
                       None, "", "")  # fmt: skip


def reply(now: int, next_due: int, tasks: int = 0) -> Claimed:
    return Claimed(now, next_due, [], [task(n) for n in range(tasks)], 0)


def test_every_partition_is_asked_first_then_only_those_with_work() -> None:
    turns = ClaimTurns(3, poll_every_s=5.0)
    assert turns.order(now=100.0) == [0, 1, 2]
    turns.saw(0, reply(1000, 1500), asked=4, free=4, sent=100.0)  # next due in 0.5 s
    turns.saw(1, reply(1000, -1), asked=4, free=4, sent=100.0)  # nothing pending
    turns.saw(2, reply(1000, 1000, tasks=4), asked=4, free=8, sent=100.0)  # stopped at count
    assert turns.order(now=100.1) == [2]
    assert turns.order(now=100.6) == [0, 2]  # partition 0's task came due


def test_a_wake_up_or_the_poll_interval_brings_a_partition_back() -> None:
    turns = ClaimTurns(2, poll_every_s=5.0)
    for i in range(2):
        turns.saw(i, reply(1000, -1), asked=4, free=4, sent=100.0)
    assert turns.order(now=101.0) == []
    turns.wake(1)
    assert turns.order(now=101.0) == [1]
    assert turns.order(now=105.0) == [0, 1]  # not asked for a poll interval


def test_the_round_starts_after_the_partition_served_last() -> None:
    turns = ClaimTurns(3, poll_every_s=5.0)
    for i in range(3):
        turns.saw(i, reply(1000, 1000, tasks=1), asked=1, free=1, sent=100.0)  # all busy
    turns.served(0)
    assert turns.order(now=100.0) == [1, 2, 0]
    turns.served(2)
    assert turns.order(now=100.0) == [0, 1, 2]


def test_out_of_slots_keeps_the_partition_maybe_due() -> None:
    turns = ClaimTurns(2, poll_every_s=5.0)
    turns.saw(0, reply(1000, 5000, tasks=2), asked=64, free=2, sent=100.0)
    turns.saw(1, reply(1000, 5000, tasks=1), asked=64, free=2, sent=100.0)
    assert turns.order(now=100.0) == [0]


def test_the_merged_reply_names_the_earliest_look_in_the_last_replys_clock() -> None:
    turns = ClaimTurns(2, poll_every_s=5.0)
    a, b = reply(1000, 1800, tasks=1), reply(1002, 1302)
    turns.saw(0, a, asked=4, free=4, sent=100.0)
    turns.saw(1, b, asked=3, free=3, sent=100.002)
    merged = turns.merged([a, b])
    assert [t.id for t in merged.tasks] == ["t0"]
    assert merged.now == 1002 and merged.next_due == 1302  # partition 1's, 0.3 s on
    nothing = ClaimTurns(1, poll_every_s=5.0)
    nothing.saw(0, reply(1000, -1), asked=1, free=1, sent=100.0)
    assert nothing.merged([reply(1000, -1)]).next_due == 6000  # the poll, 5 s on


def test_a_partition_left_unasked_by_a_full_round_does_not_hide_the_next_look() -> None:
    turns = ClaimTurns(3, poll_every_s=5.0)
    # The round stopped after partition 0 (its claim filled the slots): 1 and 2 unasked.
    turns.saw(0, reply(1000, 2000, tasks=2), asked=64, free=2, sent=100.0)
    assert turns.order(now=100.0) == [0, 1, 2]
    merged = turns.merged([reply(1000, 2000, tasks=2)])
    assert merged.next_due == 2000  # partition 0's next due, not "nothing due" (-1)


def test_a_finish_that_claimed_nothing_keeps_its_partition_in_the_round() -> None:
    # A finish out of its partition's turn asks for no task: its reply's next due is the
    # next *future* task, whatever is due now, so the partition must stay maybe due.
    turns = ClaimTurns(2, poll_every_s=5.0)
    turns.saw(0, reply(1000, 1000, tasks=2), asked=2, free=8, sent=100.0)  # a backlog
    turns.saw(1, reply(1000, -1), asked=2, free=8, sent=100.0)
    turns.saw(0, reply(1001, 9000), asked=0, free=8, sent=100.001)
    assert turns.order(now=100.01) == [0]
    assert turns.next_look() == 105.0  # the poll is still counted from the last real ask


def test_one_finish_in_rotate_every_claims_in_turn_the_others_refill_in_place() -> None:
    turns = ClaimTurns(3, poll_every_s=5.0)
    choices = [turns.refills() for _ in range(3 * ROTATE_EVERY)]
    assert choices.count(False) == 3 and not choices[ROTATE_EVERY - 1]
    turns.saw(0, reply(1000, 1000, tasks=1), asked=1, free=4, sent=100.0)  # more due there
    turns.saw(1, reply(1000, 1400), asked=1, free=4, sent=100.0)  # next due in 0.4 s
    assert turns.due_now(0, now=100.1) and not turns.due_now(1, now=100.1)
    assert turns.due_now(1, now=100.4)
    assert not turns.due_now(1, now=100.3) and 1 not in turns.order(now=100.3)
