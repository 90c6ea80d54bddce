from __future__ import annotations

from stream_jobs.dedup import DedupState, Verdict, accept


def run(seqs: list[int], window: int = 64) -> list[Verdict]:
    state = DedupState()
    verdicts = []
    for seq in seqs:
        verdict, state = accept(state, seq, window)
        verdicts.append(verdict)
    return verdicts


def test_in_order_readings_are_new_and_repeats_are_duplicates() -> None:
    assert run([0, 1, 2, 2, 1, 3]) == [
        Verdict.NEW,
        Verdict.NEW,
        Verdict.NEW,
        Verdict.DUPLICATE,
        Verdict.DUPLICATE,
        Verdict.NEW,
    ]


def test_out_of_order_readings_are_accepted_once() -> None:
    assert run([5, 3, 4, 3, 4, 6, 2]) == [
        Verdict.NEW,
        Verdict.LATE_NEW,
        Verdict.LATE_NEW,
        Verdict.DUPLICATE,
        Verdict.DUPLICATE,
        Verdict.NEW,
        Verdict.LATE_NEW,
    ]


def test_a_gap_longer_than_the_window_forgets_older_seqs() -> None:
    verdicts = run([1, 2, 200, 150, 150, 199], window=64)
    assert verdicts == [
        Verdict.NEW,
        Verdict.NEW,
        Verdict.NEW,
        Verdict.LATE_NEW,
        Verdict.DUPLICATE,
        Verdict.LATE_NEW,
    ]


def test_a_counter_restart_far_below_is_accepted_as_a_reset() -> None:
    verdicts = run([1000, 1001, 0, 1, 1], window=16)
    assert verdicts == [Verdict.NEW, Verdict.NEW, Verdict.RESET, Verdict.NEW, Verdict.DUPLICATE]


def test_the_state_round_trips_through_the_codec() -> None:
    from citystream import codec

    state = DedupState()
    for seq in (10, 7, 9, 70):
        _, state = accept(state, seq)
    back = codec.decode(codec.encode(state), DedupState)
    assert back == state
    assert accept(back, 70)[0] is Verdict.DUPLICATE
    assert accept(back, 8)[0] is Verdict.LATE_NEW
