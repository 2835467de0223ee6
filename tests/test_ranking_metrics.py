"""Ranking metrics against cases computed by hand."""
import math

import pytest

from jobs.ranking_metrics import ranking_metrics, reciprocal_rank


def test_perfect_list_scores_one():
    """All relevant items first: every metric is 1 (precision is 2/3 at k=3 with 2 relevant)."""
    m = ranking_metrics([5, 7, 9], {5, 7}, k=3)
    assert m == pytest.approx({"hit_rate": 1.0, "recall": 1.0, "precision": 2 / 3, "ndcg": 1.0, "map": 1.0,
                               "map_all": 1.0})


def test_hand_computed_case():
    """Relevant {2, 4} found at ranks 2 and 4 of [1, 2, 3, 4], k=4."""
    m = ranking_metrics([1, 2, 3, 4], {2, 4}, k=4)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    ideal = 1 + 1 / math.log2(3)
    assert m["ndcg"] == pytest.approx(dcg / ideal)
    assert m["map"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert m["recall"] == 1.0 and m["precision"] == 0.5 and m["hit_rate"] == 1.0


def test_cut_off_counts_only_the_first_k():
    """A hit below k does not count; the ideal DCG uses min(k, |relevant|)."""
    m = ranking_metrics([1, 2, 3], {3, 8, 9}, k=2)
    assert m == {"hit_rate": 0.0, "recall": 0.0, "precision": 0.0, "ndcg": 0.0, "map": 0.0, "map_all": 0.0}
    one = ranking_metrics([3, 1], {3, 8, 9}, k=1)
    assert one["ndcg"] == 1.0 and one["map"] == 1.0 and one["recall"] == pytest.approx(1 / 3)
    # MAP over all relevant items: the one hit's precision 1, over the 3 relevant ones.
    assert one["map_all"] == pytest.approx(1 / 3)


def test_reciprocal_rank():
    """1 / rank of the first relevant item; 0 when none."""
    assert reciprocal_rank([4, 5, 6], {6, 5}) == 0.5
    assert reciprocal_rank([4], {1}) == 0.0


def test_refuses_empty_relevant_and_bad_k():
    """A user with nothing held out, or k < 1, is an error, not a zero."""
    with pytest.raises(ValueError):
        ranking_metrics([1], set(), k=1)
    with pytest.raises(ValueError):
        ranking_metrics([1], {1}, k=0)


def test_many_users_at_once_equal_one_at_a_time_to_the_last_bit():
    """many_ranking_metrics gives, per user, exactly ranking_metrics' and reciprocal_rank's values."""
    import random

    from jobs.ranking_metrics import many_ranking_metrics

    draw = random.Random(11)
    recommended = [draw.sample(range(1, 60), draw.randint(0, 30)) for _ in range(300)]
    relevant = [[draw.randint(1, 70) for _ in range(draw.randint(1, 8))] for _ in range(300)]  # repeats too
    recommended[0], relevant[0] = [2**32 - 1, 5], [2**32 - 1]
    ks = (1, 5, 10, 20)
    got = many_ranking_metrics([len(r) for r in recommended], [p for r in recommended for p in r],
                               [len(r) for r in relevant], [p for r in relevant for p in r], ks)
    for user, (rec, rel) in enumerate(zip(recommended, relevant)):
        for k in ks:
            for metric, value in ranking_metrics(rec, rel, k).items():
                assert got[(metric, k)][user] == value, (user, metric, k)
        assert got[("mrr", 0)][user] == reciprocal_rank(rec, rel)
    assert all(len(v) == 0 for v in many_ranking_metrics([], [], [], [], ks).values())  # an empty batch
    with pytest.raises(ValueError):
        many_ranking_metrics([1], [3], [0], [], ks)
