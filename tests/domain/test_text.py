"""How numbers, divergences and counts are said, for the CLI, the pages and the plots alike (the dashboard's
display.js says them the same way: tests/browser/test_presentation.py compares the two)."""

import math

import pytest

from gradsweep.service.domain.text import counted, divergence_text, human_number


@pytest.mark.parametrize("value, text", [
    (0.5473520283788641, "0.547"), (0.936, "0.936"), (0.001, "0.001"), (0.00123, "0.00123"), (5.4735e-5, "5.47e-05"),
    (1e-5, "1e-05"), (12345.6, "12300"), (1e6, "1e+06"), (0.0, "0"), (-0.0, "0"), (1.0, "1"), (0.9999, "1"),
    (-2.5e-7, "-2.5e-07"), (math.inf, "inf"),
])
def test_numbers_are_written_as_people_write_them(value, text):
    assert human_number(value) == text


def test_a_divergence_names_the_last_finite_epoch_and_the_one_that_blew_up():
    assert divergence_text(4) == "loss finite through epoch 3; diverged at epoch 4"
    assert divergence_text(0) == "diverged at epoch 0: no finite loss"


def test_one_is_singular():
    assert [counted(n, "run") for n in (0, 1, 2)] == ["0 runs", "1 run", "2 runs"]
