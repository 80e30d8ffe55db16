"""Sessions: silence cutoffs, short-session merging, splitting long sessions, the eval split."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from cloneus.data.sessions import (
    eval_split_index,
    merge_short_sessions,
    session_ranges,
    silence_hours,
    split_long,
)


def gaps_of(hours: list[float]) -> np.ndarray:
    """`silence_hours` of messages whose consecutive silences are `hours` (first message first)."""
    stamps = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.cumsum([0.0, *hours]), unit="h")
    return silence_hours(pd.Series(stamps))


def covers_in_order(ranges: list[tuple[int, int]], start: int, end: int) -> bool:
    bounds = [start] + [b for _, b in ranges]
    return all(a == bounds[i] and a < b for i, (a, b) in enumerate(ranges)) and bounds[-1] == end


class TestSilenceHours:
    def test_first_message_is_infinite_silence(self):
        gaps = gaps_of([1.0, 0.5])
        assert gaps[0] == math.inf
        np.testing.assert_allclose(gaps[1:], [1.0, 0.5])

    def test_no_timestamps_gives_none(self):
        assert silence_hours(pd.Series([pd.NaT, pd.NaT], dtype="datetime64[ns, UTC]")) is None

    def test_a_missing_timestamp_never_starts_a_session(self):
        stamps = pd.Series(pd.to_datetime(["2024-01-01 00:00", None, "2024-01-01 09:00"], utc=True))
        gaps = silence_hours(stamps)
        assert gaps[1] == 0.0 and gaps[2] == 9.0


class TestSessionRanges:
    def test_silence_of_at_least_cutoff_starts_a_session(self):
        gaps = gaps_of([0.1, 0.1, 4.0, 0.1, 0.1, 3.9, 0.1])
        assert session_ranges(gaps, 0, 8, hours=4.0, min_len=1) == [(0, 3), (3, 8)]

    def test_short_session_merges_into_nearer_neighbour(self):
        # sessions [0,3) [3,4) [4,7): the lone message is 5h after the first session and 10h before the last
        gaps = gaps_of([0.1, 0.1, 5.0, 10.0, 0.1, 0.1])
        assert session_ranges(gaps, 0, 7, hours=4.0, min_len=2) == [(0, 4), (4, 7)]
        gaps = gaps_of([0.1, 0.1, 10.0, 5.0, 0.1, 0.1])
        assert session_ranges(gaps, 0, 7, hours=4.0, min_len=2) == [(0, 3), (3, 7)]

    def test_merging_keeps_going_until_long_enough(self):
        ranges = [(0, 1), (1, 2), (2, 3), (3, 9)]
        gaps = np.array([math.inf, 1.0, 2.0, 3.0, *[0.1] * 5])
        assert merge_short_sessions(ranges, gaps, min_len=3) == [(0, 3), (3, 9)]
        assert merge_short_sessions(ranges, gaps, min_len=4) == [(0, 9)]

    def test_a_slice_never_merges_outside_itself(self):
        gaps = gaps_of([0.1, 9.0, 0.1, 0.1])
        assert session_ranges(gaps, 2, 5, hours=4.0, min_len=5) == [(2, 5)]

    def test_without_timestamps_one_session(self):
        assert session_ranges(None, 3, 10, hours=1.0, min_len=3) == [(3, 10)]

    @settings(max_examples=200, deadline=None)
    @given(
        hours=st.lists(st.floats(0, 12, allow_nan=False), min_size=0, max_size=60),
        cutoff=st.floats(0.01, 10),
        min_len=st.integers(1, 6),
        start_frac=st.floats(0, 1),
    )
    def test_sessions_cover_every_message_once_in_order(self, hours, cutoff, min_len, start_frac):
        gaps = gaps_of(hours)
        n = len(gaps)
        start = int(start_frac * (n - 1))
        ranges = session_ranges(gaps, start, n, cutoff, min_len)
        assert covers_in_order(ranges, start, n)
        if len(ranges) > 1:
            assert all(b - a >= min_len for a, b in ranges)


class TestSplitLong:
    def test_fitting_session_is_untouched(self):
        assert split_long(np.array([5, 5, 5]), gaps_of([1, 1]), 0, 3, budget=15) == [(0, 3)]

    def test_splits_at_the_longest_silence(self):
        counts = np.full(6, 10)
        gaps = gaps_of([0.1, 0.2, 0.1, 3.0, 0.1])  # longest silence before message 4
        assert split_long(counts, gaps, 0, 6, budget=45) == [(0, 4), (4, 6)]

    def test_recurses_until_parts_fit(self):
        counts = np.full(8, 10)
        gaps = gaps_of([0.5, 0.1, 0.4, 3.0, 0.1, 0.2, 0.1])
        parts = split_long(counts, gaps, 0, 8, budget=25)
        assert parts == [(0, 1), (1, 3), (3, 4), (4, 6), (6, 8)]

    def test_equal_silences_split_near_the_token_midpoint(self):
        counts = np.full(8, 10)
        assert split_long(counts, gaps_of([1.0] * 7), 0, 8, budget=40) == [(0, 4), (4, 8)]

    def test_without_timestamps_packs_greedily(self):
        counts = np.array([3, 4, 3, 5, 1, 9])
        assert split_long(counts, None, 0, 6, budget=10) == [(0, 3), (3, 5), (5, 6)]

    def test_a_single_message_over_budget_is_its_own_part(self):
        counts = np.array([2, 50, 2])
        assert split_long(counts, gaps_of([1, 1]), 0, 3, budget=10) == [(0, 1), (1, 2), (2, 3)]

    @settings(max_examples=200, deadline=None)
    @given(
        data=st.lists(st.tuples(st.integers(1, 40), st.floats(0, 6, allow_nan=False)), min_size=1, max_size=80),
        budget=st.integers(1, 120),
        timestamps=st.booleans(),
    )
    def test_parts_cover_in_order_and_fit(self, data, budget, timestamps):
        counts = np.array([c for c, _ in data])
        gaps = gaps_of([g for _, g in data[1:]]) if timestamps else None
        parts = split_long(counts, gaps, 0, len(counts), budget)
        assert covers_in_order(parts, 0, len(counts))
        for a, b in parts:
            assert counts[a:b].sum() <= budget or b - a == 1


class TestEvalSplit:
    def test_latest_fraction_of_sessions(self):
        sessions = [(0, 3), (3, 5), (5, 9), (9, 10)]
        assert eval_split_index(sessions, 0.5) == 5
        assert eval_split_index(sessions, 0.1) == 9  # at least one session

    def test_nothing_held_out(self):
        assert eval_split_index([(0, 3), (3, 5)], 0.0) == 5
        assert eval_split_index([(0, 7)], 0.5) == 7

    def test_never_holds_out_everything(self):
        assert eval_split_index([(0, 3), (3, 5)], 0.99) == 3
