"""The report's adherence view without Elasticsearch: the days left and on track as of the
report's last day (:func:`lib.tools.report.as_of`), and the section's HTML. The view against
the real Elasticsearch: tests/integration/test_report.py."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from lib.monitor.adherence import CycleDays
from lib.tools import report

START = date(2025, 2, 1)  # cycle 2025-02-01 .. 2025-03-02


def _doc(reading_days: list[int]) -> dict:
    cycle = CycleDays(START)
    for d in reading_days:
        cycle.add(START + timedelta(days=d))
    return cycle.doc("pat-1")


@pytest.mark.parametrize(
    ("reading_days", "day", "left", "on_track"),
    [
        # the day of the latest reading: the days after it, as the stored document says
        (list(range(10)), START + timedelta(days=9), 20, True),
        # silent since: the days from the report's day (it may still get a reading) to the end
        (list(range(10)), START + timedelta(days=25), 5, False),  # 10 + 5 < 16
        (list(range(10)), START + timedelta(days=24), 6, True),  # 10 + 6 = 16: on track
        # a report's day before the latest reading: the stored figures
        (list(range(10)), START + timedelta(days=3), 20, True),
        # the cycle has ended: nothing left
        (list(range(15)), START + timedelta(days=40), 0, False),
        # the last day of the cycle, no reading yet that day: one day left
        ([0], START + timedelta(days=29), 1, False),
    ],
)
def test_days_left_count_from_the_reports_day_or_after_the_latest_reading(
    reading_days, day, left, on_track
):
    doc = _doc(reading_days)
    now = report.as_of(doc, day)
    assert (now["days_left"], now["on_track"]) == (left, on_track)
    assert now["days_with_readings"] == doc["days_with_readings"]
    assert now["days_left"] <= doc["days_left"]  # never more than as of the latest reading


def test_as_of_the_latest_reading_it_is_the_monitors_document():
    for days in ([0], [0, 1, 2], list(range(0, 30, 2)), list(range(30))):
        doc = _doc(days)
        last = date.fromisoformat(doc["last_reading_date"])
        now = report.as_of(doc, last)
        assert (now["days_left"], now["on_track"]) == (doc["days_left"], doc["on_track"])


def test_the_section_counts_bands_lists_patients_and_the_programs_line():
    behind = {**_doc([0]), "patient_id": "pat<x>", "days_left": 3, "program": "postpartum"}
    view = report.AdherenceView(
        day=date(2025, 3, 1),
        bands={"under_2": 1, "2_to_15": 0, "16_plus": 5},
        not_on_track=[behind],
        not_on_track_total=2,
        severe_confirmed=1,
        severe_unconfirmed=0,
    )
    html = report._adherence_section(view)
    assert '<span id="adherence_patients">6</span>' in html
    assert '<span id="adherence_16_plus">5</span>' in html
    assert '<span id="not_on_track">2</span>' in html and "(the first 1 shown)" in html
    assert '<span id="severe_confirmed">1</span> confirmed severe_range_bp' in html
    assert "pat&lt;x&gt;" in html and "pat<x>" not in html
    assert report._adherence_section(None) == ""
    plain = report.AdherenceView(date(2025, 3, 1), {"under_2": 0}, [], 0)
    assert "Programs:" not in report._adherence_section(plain)
