"""Unit tests for django_jobs.schedules: pure time logic, no database."""

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from django_jobs.exceptions import InvalidSchedule, JobsError
from django_jobs.schedules import (
    UNITS,
    CronSchedule,
    IntervalSchedule,
    get_timezone,
    next_run,
    parse_schedule,
    parse_when,
    upcoming,
)

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
SYDNEY = ZoneInfo("Australia/Sydney")
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    """Build an aware UTC datetime."""
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def runs(expression: str, after: datetime, tz: ZoneInfo, count: int) -> list[datetime]:
    """Return the next `count` run instants of an expression."""
    return [run for run, _ in upcoming(parse_schedule(expression), after=after, tz=tz, count=count)]


# get_timezone


def test_get_timezone() -> None:
    assert get_timezone("Europe/Paris") == PARIS
    assert get_timezone("UTC") == ZoneInfo("UTC")


@pytest.mark.parametrize("name", ["Europe/Pariss", "", "Europe", "../etc/passwd", "/etc/x", 42])
def test_get_timezone_unknown(name: object) -> None:
    with pytest.raises(InvalidSchedule) as info:
        get_timezone(name)  # type: ignore[arg-type]
    assert str(info.value) == (
        f"Unknown timezone {name!r}. Use an IANA name such as 'Europe/Paris' or 'UTC'."
    )


def test_units() -> None:
    assert UNITS["second"](30) == UNITS["seconds"](30) == timedelta(seconds=30)
    assert UNITS["minutes"](2) == timedelta(minutes=2)
    assert UNITS["hour"](1) == timedelta(hours=1)
    assert UNITS["days"](2) == timedelta(days=2)
    assert UNITS["week"](1) == timedelta(weeks=1)


# parse_when


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (datetime(2026, 12, 1, 9, 0, tzinfo=PARIS), datetime(2026, 12, 1, 9, 0, tzinfo=PARIS)),
        (timedelta(minutes=5), utc(2026, 6, 1, 12, 5)),
        (timedelta(minutes=-5), utc(2026, 6, 1, 11, 55)),
        ("now", NOW),
        ("  NOW ", NOW),
        ("in 30 seconds", utc(2026, 6, 1, 12, 0, 30)),
        ("in 10 minutes", utc(2026, 6, 1, 12, 10)),
        ("in 1 minute", utc(2026, 6, 1, 12, 1)),
        ("in 1 hour", utc(2026, 6, 1, 13, 0)),
        ("In 3 Hours", utc(2026, 6, 1, 15, 0)),
        ("in 2 days", utc(2026, 6, 3, 12, 0)),
        ("in 1 week", utc(2026, 6, 8, 12, 0)),
        (" in   0  minutes ", NOW),
        ("2026-12-01T09:00:00+01:00", utc(2026, 12, 1, 8, 0)),
        ("2026-12-01T08:00:00Z", utc(2026, 12, 1, 8, 0)),
        ("2026-12-01 08:00:00-05:00", utc(2026, 12, 1, 13, 0)),
    ],
)
def test_parse_when(when: datetime | timedelta | str, expected: datetime) -> None:
    result = parse_when(when, now=NOW)
    assert result == expected
    assert result.tzinfo is UTC


@pytest.mark.parametrize("hours", [1, 18.75, -21.05, 23.99])
def test_parse_when_gives_the_same_instant_in_utc(hours: float) -> None:
    # PostgreSQL refuses offsets of 16 hours or more, which Python allows.
    when = datetime(2026, 12, 1, 9, 0, tzinfo=timezone(timedelta(hours=hours)))
    for value in (when, when.isoformat()):
        result = parse_when(value, now=NOW)
        assert result == when
        assert result.tzinfo is UTC


@pytest.mark.parametrize(
    ("when", "shown"),
    [
        (datetime(2026, 12, 1, 9, 0), "when='2026-12-01 09:00:00'"),
        ("2026-12-01T09:00:00", "when='2026-12-01T09:00:00'"),
        ("2026-12-01", "when='2026-12-01'"),
    ],
)
def test_parse_when_naive(when: datetime | str, shown: str) -> None:
    with pytest.raises(InvalidSchedule) as info:
        parse_when(when, now=NOW)
    message = str(info.value)
    assert shown in message
    assert "django.utils.timezone.make_aware(value)" in message
    assert "'+00:00'" in message


@pytest.mark.parametrize(
    "when",
    [
        "next tuesday",
        "",
        "in 5 fortnights",
        "in -5 minutes",
        "in 1.5 hours",
        "in",
        42,
        None,
    ],
)
def test_parse_when_not_understood(when: object) -> None:
    with pytest.raises(InvalidSchedule) as info:
        parse_when(when, now=NOW)  # type: ignore[arg-type]
    assert str(info.value) == (
        f"Cannot understand when={when!r}. Use an aware datetime, a timedelta, 'now', "
        "'in N seconds|minutes|hours|days|weeks', or an ISO 8601 string with an offset such as "
        "'2026-12-01T09:00:00+01:00'."
    )


@pytest.mark.parametrize(
    "when",
    [
        "in 99999999999 days",  # past timedelta.max
        "in 999999999 days",  # past datetime.max
        "in " + "9" * 5000 + " days",  # more digits than int() reads
        timedelta(days=10**8),
        -timedelta(days=10**6),
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-12:00",
        datetime(1899, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(9999, 12, 30, 0, 0, 1, tzinfo=UTC),
    ],
)
def test_parse_when_out_of_range(when: object) -> None:
    with pytest.raises(InvalidSchedule) as info:
        parse_when(when, now=NOW)  # type: ignore[arg-type]
    message = str(info.value)
    assert "is outside the times django_jobs can store, 1900-01-01T00:00:00+00:00 to " in message
    assert "9999-12-30T00:00:00+00:00 (UTC)" in message


def test_parse_when_at_the_bounds() -> None:
    earliest = datetime(1900, 1, 1, tzinfo=UTC)
    latest = datetime(9999, 12, 30, tzinfo=UTC)
    assert parse_when(earliest, now=NOW) == earliest
    assert parse_when("9999-12-30T00:00:00Z", now=NOW) == latest
    # The same instants in any offset.
    assert parse_when("1900-01-01T01:00:00+01:00", now=NOW) == earliest
    assert parse_when(latest - NOW, now=NOW) == latest


def test_invalid_schedule_is_a_jobs_error_and_value_error() -> None:
    with pytest.raises(JobsError):
        parse_when("next tuesday", now=NOW)
    with pytest.raises(ValueError):
        parse_schedule("nope")


def test_naive_now_is_rejected() -> None:
    with pytest.raises(InvalidSchedule, match="now=datetime"):
        parse_when("now", now=datetime(2026, 6, 1))


# parse_schedule


@pytest.mark.parametrize(
    ("expression", "normalized", "described"),
    [
        ("* * * * *", "* * * * *", "every minute"),
        ("*/5  * * * * ", "*/5 * * * *", "every 5 minutes"),
        ("7 * * * *", "7 * * * *", "hourly at :07"),
        ("30 2 * * *", "30 2 * * *", "daily at 02:30"),
        ("0 9 * * 1", "0 9 * * 1", "weekly on Monday at 09:00"),
        ("0 9 * * sun", "0 9 * * sun", "weekly on Sunday at 09:00"),
        ("0 3 1 * *", "0 3 1 * *", "monthly on day 1 at 03:00"),
        ("@daily", "@daily", "daily at 00:00"),
        ("0 */2 * * *", "0 */2 * * *", "cron: 0 */2 * * *"),
        ("0 3 1 1 *", "0 3 1 1 *", "cron: 0 3 1 1 *"),
        ("0 3 * mar fri", "0 3 * mar fri", "cron: 0 3 * mar fri"),
    ],
)
def test_parse_cron(expression: str, normalized: str, described: str) -> None:
    schedule = parse_schedule(expression)
    assert isinstance(schedule, CronSchedule)
    assert schedule.expression == normalized
    assert schedule.describe() == described


@pytest.mark.parametrize(
    ("expression", "interval", "calendar", "described"),
    [
        ("every 30 seconds", timedelta(seconds=30), False, "every 30 seconds"),
        ("every second", timedelta(seconds=1), False, "every second"),
        ("every 5 minutes", timedelta(minutes=5), False, "every 5 minutes"),
        ("every 1 minute", timedelta(minutes=1), False, "every minute"),
        ("every minute", timedelta(minutes=1), False, "every minute"),
        ("every 2 hours", timedelta(hours=2), False, "every 2 hours"),
        ("every hour", timedelta(hours=1), False, "every hour"),
        ("every 24 hours", timedelta(hours=24), False, "every 24 hours"),
        ("every 3 days", timedelta(days=3), True, "every 3 days"),
        ("every day", timedelta(days=1), True, "every day"),
        ("Every  2  Weeks", timedelta(weeks=2), True, "every 2 weeks"),
        ("every week", timedelta(weeks=1), True, "every week"),
    ],
)
def test_parse_interval(
    expression: str, interval: timedelta, calendar: bool, described: str
) -> None:
    schedule = parse_schedule(expression)
    assert schedule == IntervalSchedule(" ".join(expression.lower().split()), interval, calendar)
    assert schedule.describe() == described


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("61 * * * *", "(croniter: [61 * * * *] is not acceptable, out of range)"),
        ("a b c d e", "croniter:"),
        ("* * *", "(expected 5 fields, got 3)"),
        ("", "(expected 5 fields, got 0)"),
        ("every 5 fortnights", "nor an interval such as 'every 5 minutes'."),
        ("every minutes", "nor an interval such as 'every 5 minutes'."),
        ("every -5 minutes", "nor an interval such as 'every 5 minutes'."),
        ("next tuesday", "not a valid cron expression"),
        ("* * * * * *", "it has 6 fields, but only 5-field cron expressions"),
        ("0 0 3 * * * 2026", "it has 7 fields, but only 5-field cron expressions"),
        ("every 0 minutes", "the interval is 0"),
        ("every 99999999999 days", "the interval is longer than 36525 days (100 years)"),
        ("every 36526 days", "the interval is longer than 36525 days (100 years)"),
        (",".join(["0"] * 120) + " * * * *", "(longer than 200 characters)"),
        ("0 0 30 2 *", "never matches a date"),
        ("R 3 * * *", "random 'R' fields"),
    ],
)
def test_parse_schedule_errors(expression: str, fragment: str) -> None:
    with pytest.raises(InvalidSchedule) as info:
        parse_schedule(expression)
    message = str(info.value)
    assert message.startswith(f"Invalid schedule {expression!r}: ")
    assert fragment in message
    assert message.endswith(".")


def test_parse_schedule_rejects_non_string() -> None:
    with pytest.raises(InvalidSchedule, match="Invalid schedule 5:"):
        parse_schedule(5)  # type: ignore[arg-type]


# Cron in a timezone, across DST


def test_cron_runs_on_local_wall_clock() -> None:
    assert runs("0 9 * * *", utc(2026, 1, 10, 12), PARIS, 1) == [utc(2026, 1, 11, 8)]
    assert runs("0 9 * * *", utc(2026, 7, 10, 12), PARIS, 1) == [utc(2026, 7, 11, 7)]


def test_spring_forward_runs_at_end_of_gap() -> None:
    # 02:30 does not exist in Paris on 2026-03-29; the clock jumps from 02:00 to 03:00.
    assert runs("30 2 * * *", utc(2026, 3, 28, 12), PARIS, 2) == [
        utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 30, 0, 30),
    ]


def test_spring_forward_candidates_in_gap_collapse_into_one_run() -> None:
    assert runs("*/15 * * * *", utc(2026, 3, 29, 0, 40), PARIS, 4) == [
        utc(2026, 3, 29, 0, 45),
        utc(2026, 3, 29, 1, 0),  # 02:00, 02:15, 02:30, 02:45 and 03:00 local
        utc(2026, 3, 29, 1, 15),
        utc(2026, 3, 29, 1, 30),
    ]


def test_fall_back_01_30_runs_once() -> None:
    assert runs("30 1 * * *", utc(2026, 10, 24, 12), PARIS, 2) == [
        utc(2026, 10, 24, 23, 30),
        utc(2026, 10, 26, 0, 30),
    ]


def test_repeated_wall_time_runs_at_first_occurrence_only() -> None:
    # 02:30 happens twice in Paris on 2026-10-25: 00:30 UTC (CEST) and 01:30 UTC (CET).
    schedule = parse_schedule("30 2 * * *")
    first = utc(2026, 10, 25, 0, 30)
    assert schedule.next_after(utc(2026, 10, 24, 12), PARIS) == first
    assert schedule.next_after(first, PARIS) == utc(2026, 10, 26, 1, 30)
    # From inside the repeated hour, the second 02:30 is not a new run either.
    assert schedule.next_after(utc(2026, 10, 25, 1, 10), PARIS) == utc(2026, 10, 26, 1, 30)


def test_every_30_minutes_across_fall_back_has_no_duplicates() -> None:
    instants = runs("*/30 * * * *", utc(2026, 10, 24, 22, 0), PARIS, 12)
    assert len(set(instants)) == len(instants)
    assert instants == sorted(instants)
    assert [run.astimezone(PARIS).strftime("%H:%M") for run in instants[:6]] == [
        "00:30",
        "01:00",
        "01:30",
        "02:00",
        "02:30",
        "03:00",  # the repeated 02:00-02:59 CET hour has no runs
    ]


def test_monthly_on_the_31st_skips_short_months() -> None:
    after = datetime(2026, 1, 31, 3, 0, tzinfo=PARIS)
    assert runs("0 3 31 * *", after, PARIS, 3) == [
        datetime(2026, 3, 31, 3, 0, tzinfo=PARIS),
        datetime(2026, 5, 31, 3, 0, tzinfo=PARIS),
        datetime(2026, 7, 31, 3, 0, tzinfo=PARIS),
    ]


def test_results_are_utc() -> None:
    run = parse_schedule("0 9 * * *").next_after(datetime(2026, 1, 1, tzinfo=PARIS), PARIS)
    assert run.tzinfo is UTC


@pytest.mark.parametrize(
    ("tz", "after", "expected"),
    [
        # New York springs forward on 2026-03-08 at 02:00 -> 03:00 EDT.
        (NEW_YORK, utc(2026, 3, 7, 12), [utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)]),
        # Sydney falls back on 2026-04-05 at 03:00 AEDT -> 02:00 AEST; 02:30 happens twice.
        (SYDNEY, utc(2026, 4, 4, 0), [utc(2026, 4, 4, 15, 30), utc(2026, 4, 5, 16, 30)]),
        # Sydney springs forward on 2026-10-04 at 02:00 AEST -> 03:00 AEDT.
        (SYDNEY, utc(2026, 10, 3, 0), [utc(2026, 10, 3, 16, 0), utc(2026, 10, 4, 15, 30)]),
    ],
)
def test_other_zones(tz: ZoneInfo, after: datetime, expected: list[datetime]) -> None:
    assert runs("30 2 * * *", after, tz, 2) == expected


# Intervals


def test_absolute_interval_is_utc_arithmetic_across_dst() -> None:
    schedule = parse_schedule("every 1 hour")
    after = utc(2026, 3, 29, 0, 30)  # 01:30 CET
    assert [run for run, _ in upcoming(schedule, after=after, tz=PARIS, count=2)] == [
        utc(2026, 3, 29, 1, 30),
        utc(2026, 3, 29, 2, 30),
    ]


def test_calendar_day_interval_keeps_local_time_across_dst() -> None:
    schedule = parse_schedule("every day")
    after = datetime(2026, 3, 27, 9, 0, tzinfo=PARIS)
    local = [run.astimezone(PARIS) for run, _ in upcoming(schedule, after=after, tz=PARIS, count=3)]
    assert [run.strftime("%m-%d %H:%M %Z") for run in local] == [
        "03-28 09:00 CET",
        "03-29 09:00 CEST",
        "03-30 09:00 CEST",
    ]
    assert next_run(schedule, scheduled_at=after, now=utc(2026, 3, 30, 12), tz=PARIS) == datetime(
        2026, 3, 31, 9, 0, tzinfo=PARIS
    )


def test_calendar_week_interval_across_fall_back() -> None:
    schedule = parse_schedule("every week")
    after = datetime(2026, 10, 20, 9, 0, tzinfo=PARIS)
    assert schedule.next_after(after, PARIS) == datetime(2026, 10, 27, 9, 0, tzinfo=PARIS)


def test_calendar_interval_gap_and_fold() -> None:
    schedule = parse_schedule("every day")
    gap = schedule.next_after(datetime(2026, 3, 28, 2, 30, tzinfo=PARIS), PARIS)
    assert gap == utc(2026, 3, 29, 1, 0)
    fold = schedule.next_after(datetime(2026, 10, 24, 2, 30, tzinfo=PARIS), PARIS)
    assert fold == utc(2026, 10, 25, 0, 30)


# next_run: anchors and misfires


@pytest.mark.parametrize(
    ("expression", "scheduled_at", "now", "expected"),
    [
        # Intervals keep the anchor's grid; a missed 12:05 is not replayed.
        ("every 5 minutes", utc(2026, 6, 1, 12), utc(2026, 6, 1, 12, 1), utc(2026, 6, 1, 12, 5)),
        ("every 5 minutes", utc(2026, 6, 1, 12), utc(2026, 6, 1, 12, 7), utc(2026, 6, 1, 12, 10)),
        # A slot equal to now is not after now.
        ("every 5 minutes", utc(2026, 6, 1, 12), utc(2026, 6, 1, 12, 10), utc(2026, 6, 1, 12, 15)),
        # Cron counts from the scheduled time, not from a late finish.
        ("*/10 * * * *", utc(2026, 6, 1, 12), utc(2026, 6, 1, 12, 4), utc(2026, 6, 1, 12, 10)),
        # Three days of missed 03:00 Paris runs: only the next slot after now.
        ("0 3 * * *", utc(2026, 6, 1, 1), utc(2026, 6, 4, 8), utc(2026, 6, 5, 1)),
    ],
)
def test_next_run_anchor_and_misfire(
    expression: str, scheduled_at: datetime, now: datetime, expected: datetime
) -> None:
    schedule = parse_schedule(expression)
    assert next_run(schedule, scheduled_at=scheduled_at, now=now, tz=PARIS) == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [("every 5 minutes", utc(2026, 6, 1, 12, 5)), ("*/15 * * * *", utc(2026, 6, 1, 12, 15))],
)
def test_next_run_first_sync(expression: str, expected: datetime) -> None:
    schedule = parse_schedule(expression)
    assert next_run(schedule, scheduled_at=None, now=NOW, tz=PARIS) == expected


def test_next_run_rejects_naive_datetimes() -> None:
    schedule = parse_schedule("every minute")
    with pytest.raises(InvalidSchedule, match="scheduled_at="):
        next_run(schedule, scheduled_at=datetime(2026, 6, 1), now=NOW, tz=PARIS)


# upcoming


def test_upcoming_flags_dst_changes() -> None:
    schedule = parse_schedule("0 9 * * *")
    result = upcoming(schedule, after=utc(2026, 3, 27, 12), tz=PARIS, count=4)
    assert result == [
        (utc(2026, 3, 28, 8), False),
        (utc(2026, 3, 29, 7), True),
        (utc(2026, 3, 30, 7), False),
        (utc(2026, 3, 31, 7), False),
    ]


def test_upcoming_flags_change_before_first_run() -> None:
    schedule = parse_schedule("0 9 * * 1")
    result = upcoming(schedule, after=utc(2026, 10, 23, 12), tz=PARIS, count=2)
    assert result == [(utc(2026, 10, 26, 8), True), (utc(2026, 11, 2, 8), False)]


def test_upcoming_count() -> None:
    schedule = parse_schedule("every 2 hours")
    assert len(upcoming(schedule, after=NOW, tz=PARIS)) == 5
    assert upcoming(schedule, after=NOW, tz=PARIS, count=0) == []
