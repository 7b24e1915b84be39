"""Schedule math (pure): TFMOT's polynomial decay, update steps, the gradual plan, iterative targets, epoch split."""

import pytest

from src.pruning import schedules as S


def test_polynomial_sparsity_matches_tfmot_formula():
    # p = clip((step - 10) / 100, 0, 1); s = 0.8 + (0.1 - 0.8) * (1 - p) ** 3
    for step, p in [(0, 0.0), (10, 0.0), (35, 0.25), (60, 0.5), (110, 1.0), (500, 1.0)]:
        assert S.polynomial_sparsity(step, 10, 110, 0.1, 0.8) == pytest.approx(0.8 - 0.7 * (1 - p) ** 3)
    assert S.polynomial_sparsity(60, 10, 110, 0.0, 0.8, power=1) == pytest.approx(0.4)
    assert S.polynomial_sparsity(110, 10, 110, 0.13, 0.97) == 0.97  # exactly final at end_step


@pytest.mark.parametrize("args, name", [
    ((0, -1, 10, 0.0, 0.5), "begin_step"), ((0, 5, 5, 0.0, 0.5), "end_step"), ((0, 0, 10, 0.0, 1.5), "final"),
    ((0, 0, 10, 0.6, 0.5), "initial"), ((0, 0, 10, -0.1, 0.5), "initial"),
])
def test_polynomial_sparsity_rejects_bad_arguments(args, name):
    with pytest.raises(ValueError, match=name):
        S.polynomial_sparsity(*args)
    with pytest.raises(ValueError, match="power"):
        S.polynomial_sparsity(0, 0, 10, 0.0, 0.5, power=0)


def test_gradual_update_steps_always_end_at_end_step():
    assert S.gradual_update_steps(0, 10, 3) == [0, 3, 6, 9, 10]
    assert S.gradual_update_steps(0, 9, 3) == [0, 3, 6, 9]
    assert S.gradual_update_steps(5, 6, 100) == [5, 6]
    with pytest.raises(ValueError, match="frequency"):
        S.gradual_update_steps(0, 10, 0)
    with pytest.raises(ValueError, match="end_step"):
        S.gradual_update_steps(3, 3, 1)


def test_gradual_span_covers_the_first_fraction_of_the_budget():
    assert S.gradual_span(100) == (0, 70)
    assert S.gradual_span(34, 0.7) == (0, 24)  # 23.8 -> 24
    assert S.gradual_span(1, 0.1) == (0, 1)  # at least one step
    assert S.gradual_span(10, 1.0) == (0, 10)
    with pytest.raises(ValueError, match="span_fraction"):
        S.gradual_span(10, 0.0)
    with pytest.raises(ValueError, match="total_steps"):
        S.gradual_span(0)


def test_gradual_plan_follows_the_cubic_and_ends_exactly_at_final_k():
    plan = S.gradual_plan(total_steps=34, frequency=5, initial_k=10.0, final_k=73.0)
    assert [s for s, _ in plan] == [0, 5, 10, 15, 20, 24]
    for step, k in plan[:-1]:
        assert k == pytest.approx(100 * S.polynomial_sparsity(step, 0, 24, 0.10, 0.73))
    assert plan[0][1] == pytest.approx(10.0) and plan[-1] == (24, 73.0)
    ks = [k for _, k in plan]
    assert ks == sorted(ks)
    with pytest.raises(ValueError, match="initial_k"):
        S.gradual_plan(34, 5, 80.0, 70.0)


def test_iterative_targets_prune_a_constant_fraction_of_the_remaining_weights():
    targets = S.iterative_targets(90.0, 3)
    assert targets == pytest.approx([100 * (1 - 0.1 ** (1 / 3)), 100 * (1 - 0.1 ** (2 / 3)), 90.0])
    remaining = [100.0] + [100.0 - k for k in targets]
    ratios = [b / a for a, b in zip(remaining, remaining[1:], strict=False)]
    assert ratios == pytest.approx([ratios[0]] * 3)
    assert S.iterative_targets(7.0, 3)[-1] == 7.0  # exact, not 100 * (1 - 0.93 ** 1)
    assert S.iterative_targets(100.0, 2) == [100.0, 100.0]
    assert S.iterative_targets(55.0, 1) == [55.0]
    with pytest.raises(ValueError, match="rounds"):
        S.iterative_targets(50.0, 0)
    with pytest.raises(ValueError, match="k_final"):
        S.iterative_targets(101.0, 2)


@pytest.mark.parametrize("total, parts, expected", [(10, 3, [4, 3, 3]), (2, 3, [1, 1, 0]), (0, 2, [0, 0]),
                                                    (9, 3, [3, 3, 3]), (5, 1, [5])])
def test_split_epochs_sums_exactly_with_remainder_first(total, parts, expected):
    assert S.split_epochs(total, parts) == expected


def test_split_epochs_rejects_bad_arguments():
    with pytest.raises(ValueError, match="parts"):
        S.split_epochs(3, 0)
    with pytest.raises(ValueError, match="total_epochs"):
        S.split_epochs(-1, 2)
