"""TOFA's selection index I(a): the sum of the iterations at which a subnet was trained (it lives in
selection_index.py; the sampler that draws the subnets is train/sampler.py)."""

from matchnas.selection_index import SelectionIndex


def test_selection_index_adds_the_iteration_and_round_trips(tiny_space):
    index = SelectionIndex()
    a, b = tiny_space.max(), tiny_space.min()
    index.record(a, 1)
    index.record(b, 2)
    index.record(a, 5)
    assert index.scores == {a: 6.0, b: 2.0}
    assert SelectionIndex.from_json(index.to_json()).scores == index.scores
