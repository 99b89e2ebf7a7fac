"""The 30-day usage charts: valid SVG drawn on the server (no script, no style attribute, so
the panel's CSP holds), one bar per UTC day with days without a row at zero, accessible names
that say the figures in words; on the appspace page for its owner, and summed over the
instance on the staff-only overview (404 to everyone else)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from appspaces.usage import charts
from tests.appspaces.test_usage import INLINE_SCRIPT, INLINE_STYLE, appspace_for, day, render
from tests.conftest import make_user

SVG = "{http://www.w3.org/2000/svg}"
pytestmark = pytest.mark.django_db


def svgs(html: str) -> list[ET.Element]:
    found = re.findall(r"<svg\b.*?</svg>", html, flags=re.S)
    return [ET.fromstring(svg) for svg in found]  # raises on anything but well-formed XML


def bars(svg: ET.Element) -> list[tuple[float, str]]:
    return [
        (float(rect.get("height")), rect.find(f"{SVG}title").text)
        for rect in svg.iter(f"{SVG}rect")
    ]


def test_the_appspace_card_draws_thirty_days_of_each_figure(alice):
    appspace = appspace_for(alice)
    day(appspace, 0, cpu_seconds=90, running_seconds=3600, memory_peak_bytes=50 * 2**20)
    day(appspace, 3, cpu_seconds=30, disk_bytes_max=2 * 2**20)
    html = render("appspaces/_usage.html", appspace, alice)
    drawn = svgs(html)
    assert [svg.find(f"{SVG}title").text for svg in drawn] == [s.label for s in charts.SERIES]
    for svg in drawn:
        assert svg.get("role") == "img"
        title_id, desc_id = svg.get("aria-labelledby").split()
        ids = {el.get("id") for el in svg.iter() if el.get("id")}
        assert {title_id, desc_id} <= ids
        assert len(bars(svg)) == charts.DAYS
        assert svg.get("style") is None and not svg.findall(f".//{SVG}style")
    cpu = bars(drawn[0])
    assert cpu[-1][0] > cpu[-4][0] > 0  # today (90 s) above three days ago (30 s)
    assert all(height == 0 for height, _ in cpu[:-4])  # days without a row are zero
    assert cpu[-1][1].endswith(": 1.5 min")
    desc = drawn[0].find(f"{SVG}desc").text
    assert "Highest: 1.5 min" in desc and "Today: 1.5 min" in desc
    running_today = bars(drawn[1])[-1]
    assert running_today[0] == charts.HEIGHT - charts.TOP - charts.BOTTOM  # the only day: full
    assert running_today[1].endswith(": 1 h")
    assert not INLINE_SCRIPT.search(html) and not INLINE_STYLE.search(html)


def test_an_unused_appspace_says_so_in_words(alice):
    appspace = appspace_for(alice)
    drawn = svgs(render("appspaces/_usage.html", appspace, alice))
    for svg in drawn:
        assert "Nothing was used" in svg.find(f"{SVG}desc").text
        assert all(height == 0 for height, _ in bars(svg))


def test_the_overview_sums_every_appspace_for_staff_only(alice, bob):
    one, two = appspace_for(alice, subdomain="one"), appspace_for(bob, subdomain="two")
    day(one, 1, cpu_seconds=40)
    day(two, 1, cpu_seconds=20)
    staff = make_user("usage-staff@example.com", staff=True)
    panel = Client(HTTP_HOST=settings.DS_PANEL_HOST)
    panel.force_login(staff)
    response = panel.get(reverse("instance_usage"))
    assert response.status_code == 200
    html = response.content.decode()
    cpu = bars(svgs(html)[0])
    assert cpu[-2][1].endswith(": 1 min") and cpu[-2][0] > 0  # 40 s + 20 s, yesterday
    assert html.index(">one<") < html.index(">two<")  # the busiest first

    for user in (alice, None):
        other = Client(HTTP_HOST=settings.DS_PANEL_HOST)
        if user is not None:
            other.force_login(user)
        answer = other.get(reverse("instance_usage"))
        assert answer.status_code == (404 if user else 302)
