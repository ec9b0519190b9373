import hashlib
import itertools
import json

import numpy as np
import pytest
import yaml

from matchnas.errors import MatchnasError
from matchnas.space import SearchSpace, StageConfig, SubnetConfig
from matchnas.space_file import load_space, shipped_spaces, space_from_dict, space_from_yaml
from tests.conftest import TINY_SPACE


def _enumerate(space: SearchSpace):
    """Every config of a space, by brute force (for cardinality checks on tiny spaces)."""
    per_stage = []
    for s in space.stages:
        options = []
        for d in s.depths:
            for w in s.widths:
                if s.per_block:
                    blocks = [list(itertools.product(s.kernels[i], s.expands[i])) for i in range(d)]
                    for combo in itertools.product(*blocks):
                        options.append(StageConfig(d, w, tuple(k for k, _ in combo), tuple(e for _, e in combo)))
                else:
                    for k, e in itertools.product(s.kernels[0], s.expands[0]):
                        options.append(StageConfig(d, w, (k,) * d, (e,) * d))
        per_stage.append(options)
    for r in space.resolutions:
        for stages in itertools.product(*per_stage):
            yield SubnetConfig(r, tuple(stages))


def test_cardinality_matches_enumeration(tiny_space):
    configs = set(_enumerate(tiny_space))
    assert len(configs) == tiny_space.num_configs()
    assert all(c in tiny_space for c in configs)


def test_lite0_cardinality_formula():
    space = load_space("efficientnet-lite0")
    per_block = 2 * 3  # kernel x expand
    stage = lambda depths, expand=per_block: sum(2 * expand**d for d in depths)  # noqa: E731
    expected = 3 * stage([1], 2) * stage([1, 2]) ** 2 * stage([1, 2, 3]) ** 2 * stage([2, 3, 4]) * stage([1])
    assert space.num_configs() == expected


def test_max_min(tiny_space):
    big, small = tiny_space.max(), tiny_space.min()
    assert big.resolution == 20 and small.resolution == 16
    assert big.stages[1] == StageConfig(3, 12, (5, 7, 3), (4, 4, 4))
    assert small.stages[1] == StageConfig(1, 8, (3,), (2,))
    assert big in tiny_space and small in tiny_space


def test_sample_mutate_crossover_stay_in_space(tiny_space, rng):
    for _ in range(200):
        a, b = tiny_space.sample(rng), tiny_space.sample(rng)
        assert a in tiny_space
        assert tiny_space.mutate(a, rng, prob=0.5) in tiny_space
        assert tiny_space.crossover(a, b, rng) in tiny_space


def test_sample_is_determined_by_the_generator(tiny_space):
    draw = lambda seed: [tiny_space.sample(np.random.default_rng(seed)) for _ in range(5)]  # noqa: E731
    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


def test_sample_reaches_every_choice(tiny_space, rng):
    seen = {tiny_space.sample(rng) for _ in range(3000)}
    stage1 = {c.stages[1].kernel for c in seen if c.stages[1].depth == 3}
    assert {k[1] for k in stage1} == {3, 5, 7}
    assert {c.stages[2].depth for c in seen} == {1, 2}


def test_per_stage_choice_is_shared_by_blocks(tiny_space, rng):
    for _ in range(100):
        stage = tiny_space.sample(rng).stages[2]
        assert len(set(stage.kernel)) == 1 and len(set(stage.expand)) == 1
    bad = tiny_space.max()
    mixed = StageConfig(2, 16, (3, 5), (6, 6))
    bad = SubnetConfig(bad.resolution, bad.stages[:2] + (mixed,))
    assert bad not in tiny_space
    with pytest.raises(MatchnasError, match="once per stage"):
        tiny_space.validate(bad)


def test_config_is_frozen_hashable_and_json_stable(tiny_space, rng):
    c = tiny_space.sample(rng)
    with pytest.raises(AttributeError):
        c.resolution = 3
    again = SubnetConfig.from_dict(json.loads(c.to_json()))
    assert again == c and hash(again) == hash(c) and again.to_json() == c.to_json() and again.id == c.id
    assert tiny_space.config_from_json(tiny_space.config_to_json(c)) == c


def test_config_from_another_space_is_refused(tiny_space):
    other = dict(TINY_SPACE, resolutions=[16, 24])
    other_space = space_from_dict(other)
    text = other_space.config_to_json(other_space.min())
    with pytest.raises(MatchnasError, match="made for space"):
        tiny_space.config_from_json(text)


def test_config_outside_space_is_refused(tiny_space):
    body = json.loads(tiny_space.config_to_json(tiny_space.max()))
    del body["space_digest"]
    body["stages"][1]["width"] = 13
    with pytest.raises(MatchnasError, match="stage 1 width 13"):
        tiny_space.config_from_json(json.dumps(body))
    with pytest.raises(MatchnasError, match="not valid JSON"):
        tiny_space.config_from_json("{")


def test_yaml_round_trip(tiny_space, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(tiny_space.to_dict()))
    assert space_from_yaml(path) == tiny_space


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(resolutoins=[32]), "unknown key 'resolutoins'"),
        (lambda d: d["stages"][0].update(kernal=[3]), r"stages\[0\]: unknown key 'kernal'"),
        (lambda d: d["stages"][0].update(kernel=[4]), "odd"),
        (lambda d: d["stages"][0].update(stride=3), "stride must be 1 or 2"),
        (lambda d: d["stages"][0].update(depth=[0, 1]), "below the minimum"),
        (lambda d: d["stages"][0].update(width=[]), "non-empty list"),
        (lambda d: d["stages"][0].update(width=[8, 8]), "duplicate"),
        (lambda d: d["stages"][1].update(kernel=[[3], [3]]), "per-block lists"),
        (lambda d: d["stages"][0].update(expand=["big"]), "not a valid number"),
        (lambda d: d.pop("stages"), "missing key 'stages'"),
        (lambda d: d.update(padding="valid"), "padding must be one of same, symmetric, got 'valid'"),
    ],
)
def test_bad_space_files_name_the_problem(edit, message, tmp_path):
    data = json.loads(json.dumps(TINY_SPACE))
    edit(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(MatchnasError, match=message):
        space_from_yaml(path)


def test_a_space_written_before_padding_was_recorded_is_symmetric_with_its_old_digest():
    legacy = json.loads(json.dumps(TINY_SPACE))  # no "padding" key, as every space was before
    space = space_from_dict(legacy)
    old_digest = hashlib.sha1(json.dumps({k: v for k, v in space.to_dict().items() if k not in ("name", "padding")},
                                         sort_keys=True).encode()).hexdigest()[:12]
    assert space.padding == "symmetric" and space.digest == old_digest
    same = space_from_dict({**legacy, "padding": "same"})
    assert same.digest != space.digest  # a config for one is refused by the other
    assert space_from_dict(same.to_dict()) == same


def test_shipped_spaces_load():
    names = shipped_spaces()
    assert "efficientnet-lite0" in names
    for name in names:
        space = load_space(name)
        assert space.name == name and space.max() in space


def test_unknown_space_name():
    with pytest.raises(MatchnasError, match="unknown space"):
        load_space("efficientnet-b9")
