"""The daily API budget, counted the way Google counts it.

YouTube Data API quota resets at midnight Pacific time, so the counter is keyed by the date in
`America/Los_Angeles` (which follows daylight saving: the reset is 08:00 UTC in winter, 07:00 UTC in summer).
Units are reserved *before* each call, inside one transaction, so two processes sharing the database cannot both
spend the last units; a call that then fails keeps its units spent, as Google also charges for failed requests.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from cloneus.plugins.youtube.cache import VideoCache

PACIFIC = ZoneInfo("America/Los_Angeles")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def quota_day(now: datetime) -> str:
    """The Pacific date that Google's quota counter is on at the aware instant `now`, as `YYYY-MM-DD`."""
    return now.astimezone(PACIFIC).date().isoformat()


def next_reset(now: datetime) -> datetime:
    """The UTC instant of the next Pacific midnight after `now`."""
    tomorrow = now.astimezone(PACIFIC).date() + timedelta(days=1)
    return datetime.combine(tomorrow, time(0), tzinfo=PACIFIC).astimezone(timezone.utc)


class QuotaLedger:
    """Reserves API units against a daily budget persisted in the cache database.

    Args:
        cache (`VideoCache`): whose `youtube_quota` table holds the counter.
        daily_quota (`int`): units allowed per Pacific day.
        clock (`Callable[[], datetime]`, *optional*, defaults to the system clock): returns an aware "now"; tests pass
            their own to cross the reset boundary.
    """

    def __init__(self, cache: VideoCache, daily_quota: int, clock: Callable[[], datetime] = utc_now):
        self.cache = cache
        self.daily_quota = daily_quota
        self.clock = clock

    def try_spend(self, units: int) -> bool:
        """Reserve `units` for the call about to be made; False, reserving nothing, if today's budget is short."""
        day = quota_day(self.clock())
        with self.cache.transaction() as cur:
            row = cur.execute("SELECT units_used, exhausted FROM youtube_quota WHERE day = ?", (day,)).fetchone()
            used, exhausted = row or (0, 0)
            if exhausted or used + units > self.daily_quota:
                return False
            cur.execute(
                "INSERT INTO youtube_quota (day, units_used) VALUES (?, ?) "
                "ON CONFLICT(day) DO UPDATE SET units_used = units_used + excluded.units_used",
                (day, units),
            )
        return True

    def mark_exhausted(self) -> None:
        """Google said `quotaExceeded`: spend the rest of today's budget so no further call is attempted today."""
        day = quota_day(self.clock())
        with self.cache.transaction() as cur:
            cur.execute(
                "INSERT INTO youtube_quota (day, units_used, exhausted) VALUES (?, ?, 1) "
                "ON CONFLICT(day) DO UPDATE SET exhausted = 1, units_used = MAX(units_used, excluded.units_used)",
                (day, self.daily_quota),
            )

    def used_today(self) -> int:
        day = quota_day(self.clock())
        row = self.cache.fetch_one("SELECT units_used, exhausted FROM youtube_quota WHERE day = ?", (day,))
        if row is None:
            return 0
        return max(row[0], self.daily_quota) if row[1] else row[0]

    def remaining(self) -> int:
        return max(0, self.daily_quota - self.used_today())
