"""Timestamps are never guessed silently: day/month order, epoch units, out-of-range years, clock faults."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from tests.hostile.conftest import (
    dce_message,
    expect_error,
    minutes_apart,
    telegram_message,
    write_csv,
    write_dce_json,
    write_telegram,
)

AUTHORS = ["ann", "bob", "cat"]


def rows_with(stamps: list[str]) -> list[tuple[str, str, str]]:
    return [(AUTHORS[i % 3], f"message number {i}", s) for i, s in enumerate(stamps)]


def dates_of(outcome) -> list[str]:
    return outcome.frame["timestamp"].dt.strftime("%Y-%m-%d %H:%M").tolist()


class TestDayMonthOrder:
    @pytest.mark.parametrize("sep", ["/", ".", "-"])
    @pytest.mark.parametrize("year", ["2004", "04"])
    @pytest.mark.parametrize("order", ["dayfirst", "monthfirst"])
    def test_a_field_above_12_decides_the_whole_file(self, tmp_path, prepare, sep, year, order, caplog):
        days = ["01", "02", "13"]
        pairs = [(d, "11") if order == "dayfirst" else ("11", d) for d in days]
        stamps = [f"{a}{sep}{b}{sep}{year} 18:0{i}" for i, (a, b) in enumerate(pairs)]
        with caplog.at_level(logging.INFO):
            outcome = prepare(write_csv(tmp_path / "chat.csv", rows_with(stamps)))
        assert outcome.error is None
        assert dates_of(outcome) == ["2004-11-01 18:00", "2004-11-02 18:01", "2004-11-13 18:02"]
        assert f"numeric dates read {order[:-5]}-first" in caplog.text and "line 4" in caplog.text

    def test_undecidable_file_is_refused_naming_the_setting(self, tmp_path, prepare):
        chat = write_csv(
            tmp_path / "chat.csv", rows_with(["01/11/2004 18:05", "01/11/2004 18:06", "01/11/2004 19:00"])
        )
        message = expect_error(prepare(chat), "dataset.date_format", "--dayfirst", "01/11/2004")
        assert "line 2" in message

    @pytest.mark.parametrize(("setting", "expected"), [("dayfirst", "2004-11-01"), ("monthfirst", "2004-01-11")])
    def test_the_setting_decides_an_undecidable_file(self, tmp_path, prepare, setting, expected):
        chat = write_csv(
            tmp_path / "chat.csv", rows_with(["01/11/2004 18:05", "01/11/2004 18:06", "01/11/2004 19:00"])
        )
        outcome = prepare(chat, date_format=setting)
        assert outcome.error is None and {d[:10] for d in dates_of(outcome)} == {expected}

    def test_the_order_in_which_messages_run_forwards_decides(self, tmp_path, prepare, caplog):
        chat = write_csv(
            tmp_path / "chat.csv", rows_with(["12/11/2004 18:05", "12/11/2004 20:00", "01/12/2004 09:00"])
        )
        with caplog.at_level(logging.INFO):
            outcome = prepare(chat)
        assert dates_of(outcome) == ["2004-11-12 18:05", "2004-11-12 20:00", "2004-12-01 09:00"]
        assert "run forwards" in caplog.text

    def test_dates_that_disagree_are_an_error(self, tmp_path, prepare):
        chat = write_csv(tmp_path / "chat.csv", rows_with(["13/01/2004 10:00", "01/14/2004 11:00"]))
        expect_error(prepare(chat), "disagree", "13/01/2004", "01/14/2004")

    def test_a_date_against_the_setting_is_an_error(self, tmp_path, prepare):
        chat = write_csv(tmp_path / "chat.csv", rows_with(["13/01/2004 10:00", "14/01/2004 11:00"]))
        expect_error(prepare(chat, date_format="monthfirst"), "13/01/2004", "dataset.date_format", "dayfirst")

    def test_whatsapp_shares_the_rule(self, tmp_path, prepare):
        chat = tmp_path / "chat.txt"
        chat.write_text("01/11/2004, 18:05 - Ana: hi\n01/11/2004, 18:06 - Ben: hey\n", encoding="utf-8")
        expect_error(prepare(chat), "dataset.date_format", "--dayfirst")
        assert {d[:10] for d in dates_of(prepare(chat, date_format="dayfirst"))} == {"2004-11-01"}


class TestEpochNumbers:
    INSTANT = pd.Timestamp("2023-11-14 22:13:20", tz="UTC")

    @pytest.mark.parametrize(
        ("unit", "scale"), [("seconds", 1), ("milliseconds", 1000), ("microseconds", 10**6), ("nanoseconds", 10**9)]
    )
    def test_unit_follows_from_the_magnitude_and_is_logged(self, tmp_path, prepare, unit, scale, caplog):
        base = int(self.INSTANT.timestamp())
        stamps = [str((base + 60 * i) * scale) for i in range(3)]
        with caplog.at_level(logging.INFO):
            outcome = prepare(write_csv(tmp_path / "chat.csv", rows_with(stamps)))
        assert outcome.frame["timestamp"].iloc[0] == self.INSTANT
        assert f"epoch {unit}" in caplog.text

    def test_numbers_in_discord_json(self, tmp_path, prepare, caplog):
        base = int(self.INSTANT.timestamp()) * 1000
        messages = [dce_message(i, AUTHORS[i % 3], f"hello {i}", base + 60_000 * i) for i in range(3)]
        with caplog.at_level(logging.INFO):
            outcome = prepare(write_dce_json(tmp_path / "chat.json", messages))
        assert outcome.frame["timestamp"].iloc[0] == self.INSTANT and "epoch milliseconds" in caplog.text

    def test_a_word_among_numbers_names_its_line(self, tmp_path, prepare):
        chat = write_csv(tmp_path / "chat.csv", rows_with(["1700000000", "soon", "1700000100"]))
        message = expect_error(prepare(chat), "soon")
        assert "line 3" in message


def _export(kind: str, tmp_path, bad: str):
    """A small export of `kind` whose second message carries the date `bad` (an ISO date string)."""
    stamps = minutes_apart(4)
    stamps[1] = bad
    if kind == "csv":
        return write_csv(tmp_path / "chat.csv", rows_with(stamps)), "line 3"
    if kind == "dce_json":
        messages = [dce_message(i, AUTHORS[i % 3], f"hello {i}", s) for i, s in enumerate(stamps)]
        return write_dce_json(tmp_path / "chat.json", messages), "messages[1].timestamp"
    if kind == "telegram":
        messages = [telegram_message(i, AUTHORS[i % 3], f"hello {i}", s[:19]) for i, s in enumerate(stamps)]
        return write_telegram(tmp_path / "result.json", messages), "messages[1].date"
    lines = [
        f"{int(s[8:10])}/{int(s[5:7])}/{s[:4]}, {s[11:16]} - {AUTHORS[i % 3]}: hello {i}" for i, s in enumerate(stamps)
    ]
    lines.append("13/05/2023, 11:00 - ann: a date that makes the file day-first")
    path = tmp_path / "chat.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, "line 2"


class TestOutOfRangeYears:
    @pytest.mark.parametrize("kind", ["csv", "dce_json", "telegram", "whatsapp"])
    @pytest.mark.parametrize("year", ["1500", "1676", "2263", "9999"])
    def test_each_row_is_a_counted_drop_with_its_place(self, tmp_path, prepare, kind, year, caplog):
        chat, place = _export(kind, tmp_path, f"{year}-05-01T10:03:00+00:00")
        with caplog.at_level(logging.WARNING):
            outcome = prepare(chat)
        assert outcome.error is None, outcome.error
        assert outcome.dropped.get("date_out_of_range") == 1
        assert place in caplog.text and "1677-2262" in caplog.text
        assert outcome.frame["timestamp"].dt.year.eq(2023).all()

    def test_telegram_unixtime_out_of_range_is_a_counted_drop(self, tmp_path, prepare, caplog):
        stamps = minutes_apart(4)
        messages = [telegram_message(i, AUTHORS[i % 3], f"hi {i}", s[:19]) for i, s in enumerate(stamps)]
        for m, stamp in zip(messages, stamps, strict=True):
            m["date_unixtime"] = str(int(pd.Timestamp(stamp).timestamp()))
        messages[2]["date_unixtime"] = "99999999999"
        outcome = prepare(write_telegram(tmp_path / "result.json", messages))
        assert outcome.dropped.get("date_out_of_range") == 1 and "messages[2].date_unixtime" in caplog.text

    def test_epoch_out_of_range_is_a_counted_drop(self, tmp_path, prepare):
        outcome = prepare(write_csv(tmp_path / "chat.csv", rows_with(["1700000000", "99999999999", "1700000100"])))
        assert outcome.dropped.get("date_out_of_range") == 1 and len(outcome.frame) == 2


class TestImplausibleDates:
    @pytest.mark.parametrize(
        "fault", ["1970-01-01T00:00:00+00:00", "1970-03-04T05:06:07+00:00", "1989-12-31T23:59:59Z"]
    )
    def test_a_few_early_rows_among_real_ones_are_dropped_and_shown(self, tmp_path, prepare, fault, capsys):
        from cloneus.data.prepare_cli import print_stats

        stamps = minutes_apart(30, step=200)
        stamps[7] = stamps[19] = fault
        outcome = prepare(write_csv(tmp_path / "chat.csv", rows_with(stamps)))
        assert outcome.dropped.get("implausible_date") == 2
        assert outcome.frame["timestamp"].dt.year.eq(2023).all()
        print_stats(outcome.stats, [], 512)
        assert "implausible_date 2" in capsys.readouterr().out

    def test_epoch_zero_numbers_among_seconds(self, tmp_path, prepare):
        stamps = [str(1_700_000_000 + 300 * i) for i in range(20)] + ["0"]
        outcome = prepare(write_csv(tmp_path / "chat.csv", rows_with(stamps)))
        assert outcome.dropped.get("implausible_date") == 1

    def test_a_chat_that_is_mostly_early_is_kept_and_reported(self, tmp_path, prepare, caplog):
        stamps = minutes_apart(6, start="1970-01-01T00:00:00+00:00")
        with caplog.at_level(logging.WARNING):
            outcome = prepare(write_csv(tmp_path / "chat.csv", rows_with(stamps)))
        assert len(outcome.frame) == 6 and "implausible_date" not in outcome.dropped
        assert "most timestamps are before 1990" in caplog.text
