"""The round-trip checker itself: it must catch an unreported change, and accept a reported one."""

from __future__ import annotations

import pytest

from routing.ocpi.translate.base import DROPPED, Loss
from tests.translation_check import differences, unexplained


def test_differences_name_changed_missing_and_resized_values() -> None:
    a = {"id": "1", "evses": [{"status": "AVAILABLE"}], "name": "x", "n": 1.0}
    b = {"id": "1", "evses": [{"status": "CHARGING"}], "n": 1}
    assert differences(a, b) == ["evses[0].status", "name"]
    assert differences([1, 2], [1]) == [""]


@pytest.mark.parametrize(("reported", "explained"), [
    ("evses[0].status", True), ("evses[0]", True), ("evses", True), ("evses[1]", False), ("name", False)])
def test_a_change_is_explained_only_by_a_loss_at_or_around_its_path(reported: str, explained: bool) -> None:
    a, b = {"evses": [{"status": "AVAILABLE"}]}, {"evses": [{"status": "CHARGING"}]}
    left = unexplained(a, b, [Loss(reported, DROPPED, "", "2.2.1>2.1.1")])
    assert (left == []) is explained
