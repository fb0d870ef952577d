"""The early-stopping rule on its own: rungs, brackets and who goes on (tests/integration/ runs it for real)."""

from gradsweep.service.domain.early_stopping import EarlyStopping


def test_successive_halving_judges_at_min_epochs_times_powers_of_eta_before_the_last_epoch():
    rule = EarlyStopping(type="successive_halving", min_epochs=10, eta=3)
    assert rule.brackets(1_000) == 1 and rule.bracket(7, 1_000) == 0
    assert rule.rungs(0, 1_000) == [10, 30, 90, 270, 810]
    assert rule.rungs(0, 810) == [10, 30, 90, 270]  # none at the last epoch: the run has ended anyway


def test_hyperband_deals_points_to_brackets_that_start_ever_later_as_the_paper_shares_them():
    rule = EarlyStopping(type="hyperband", min_epochs=10, eta=3)
    assert rule.brackets(1_000) == 5  # Optuna's floor(log_3(1000 / 10)) + 1
    dealt = [rule.bracket(point, 1_000) for point in range(143 * 2)]
    assert [dealt.count(bracket) for bracket in range(5)] == [81 * 2, 34 * 2, 15 * 2, 8 * 2, 5 * 2]
    assert dealt[:13] == [0, 1, 0, 2, 0, 1, 0, 0, 3, 0, 1, 0, 4]  # interleaved: every stretch in proportion
    assert [rule.rungs(bracket, 1_000) for bracket in range(5)] == [
        [10, 30, 90, 270, 810], [30, 90, 270, 810], [90, 270, 810], [270, 810], [810]]


def test_a_run_goes_on_if_among_the_best_third_of_those_at_its_rung_and_the_first_always_does():
    rule = EarlyStopping(type="successive_halving", min_epochs=1, eta=3)
    assert rule.keeps(5.0, [5.0])  # alone at the rung: nobody to be worse than
    assert not rule.keeps(5.0, [4.0, 5.0])  # max(1, 2 // 3) = 1 goes on
    losses = [0.9, 0.1, 0.5, 0.3, 0.7, 0.2]
    assert [rule.keeps(loss, losses) for loss in losses] == [False, True, False, False, False, True]
    assert rule.keeps(0.2, [0.2, 0.2, 0.2])  # a tie goes on
