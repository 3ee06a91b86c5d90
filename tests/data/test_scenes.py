"""The shapes world in words (data/scenes.py) and its drawing (data/shapes.py): captions, phrasings,
parse, the attribute schema, held-out compositions and the splits."""

from __future__ import annotations

import itertools
import random
import re

import numpy as np
import pytest

from genloop.data import shapes
from genloop.data.scenes import (
    COLOURS,
    HELDOUT_SINGLE,
    POSITIONS,
    RELATIONS,
    SHAPE_NAMES,
    SIZES,
    Obj,
    Scene,
    attribute_ids,
    canonical,
    caption,
    heldout,
    pair,
    paraphrases,
    parse,
    references,
    same,
    scene_from_ids,
    schema,
    single,
    swapped,
)


def every_single() -> list[Scene]:
    return [single(s, c, z, r, k) for s, c, z, r, k in itertools.product(
        SHAPE_NAMES, COLOURS, SIZES, ("top", "middle", "bottom"), ("left", "centre", "right"))]


def some_pairs(n: int = 400) -> list[Scene]:
    rng = random.Random(0)
    out = []
    while len(out) < n:
        a = Obj(rng.choice(SHAPE_NAMES), rng.choice(COLOURS))
        b = Obj(rng.choice(SHAPE_NAMES), rng.choice(COLOURS))
        if a != b:
            out.append(Scene((a, b), rng.choice(RELATIONS)))
    return out


def test_canonical_captions_are_todays():
    assert caption(single("circle", "red", "small", "top", "left")) == "a small red circle at the top left"
    assert caption(single("cross", "blue", "large", "middle", "centre")) == "a large blue cross in the centre"
    middle_right, bottom = single("square", "white", "medium", "middle", "right"), single(
        "diamond", "cyan", "small", "bottom", "centre")
    assert caption(middle_right) == "a medium white square on the right"
    assert caption(bottom) == "a small cyan diamond at the bottom"
    assert caption(pair("circle", "red", "left of", "square", "blue")) == "a red circle left of a blue square"
    assert caption(pair("cross", "orange", "above", "circle", "green")) == (
        "an orange cross above a green circle")


def test_every_phrasing_of_every_single_scene_parses_back():
    for scene in every_single():
        refs, paras = references(scene), paraphrases(scene)
        assert refs[0] == caption(scene) and len(refs) >= 5 and len(paras) >= 2
        assert len(set(refs + paras)) == len(refs) + len(paras)  # all different
        for text in [*refs, *paras, caption(scene).upper() + "."]:
            assert parse(text) == scene, text


def test_every_phrasing_of_a_pair_parses_to_the_same_picture():
    for scene in some_pairs():
        refs, paras = references(scene), paraphrases(scene)
        assert refs[0] == caption(scene) and len(refs) >= 5 and len(paras) >= 2
        assert parse(caption(scene)) == scene
        for text in refs + paras:
            got = parse(text)
            assert same(got, scene), text
            assert got in (scene, swapped(scene))


def test_paraphrases_are_never_a_training_phrasing():
    for scene in every_single()[::7] + some_pairs(100):
        assert not set(paraphrases(scene)) & set(references(scene))
    # some of their words are in no reference phrasing at all (unseen prompts for the encoder)
    def words(phrasings) -> set[str]:
        return {w for s in every_single() + some_pairs() for t in phrasings(s)
                for w in re.findall(r"[a-z]+", t)}

    ref_words, para_words = words(references), words(paraphrases)
    assert {"little", "big", "upper", "circular", "positioned", "beneath"} <= para_words - ref_words


@pytest.mark.parametrize("text", [
    "", "a red circle", "a small circle at the top left", "a small red thing at the top left",
    "a small red circle", "a small red circle and a blue square at the top left",
    "a small red circle at the top bottom", "a red circle left of a blue",
    "a red circle left of a red circle",
    "a red circle left of a blue square above a green cross", "hello world",
])
def test_parse_refuses_incomplete_or_ambiguous_text(text):
    assert parse(text) is None


def test_attribute_ids_follow_the_schema_and_round_trip():
    s = schema("single")
    assert s["names"] == ["shape", "colour", "size", "position"] and s["values"][3] == list(POSITIONS)
    assert len(POSITIONS) == 9 and schema("shapes") == s
    p = schema("shapes-pairs")
    assert p["names"] == ["shape1", "colour1", "relation", "shape2", "colour2"]
    assert p["values"][2] == list(RELATIONS)
    for scene in every_single():
        ids = attribute_ids(scene)
        assert all(0 <= i < len(v) for i, v in zip(ids, s["values"], strict=True))
        assert scene_from_ids("single", ids) == scene
    assert attribute_ids(single("circle", "red", "small", "top", "left")) == [0, 0, 0, 0]
    for scene in some_pairs():
        ids = attribute_ids(scene)
        assert ids == attribute_ids(swapped(scene))  # one picture, one set of ids
        assert RELATIONS[ids[2]] in ("left of", "above")
        assert scene_from_ids("pairs", ids) == canonical(scene)
    with pytest.raises(ValueError, match="do not fit"):
        scene_from_ids("single", [0, 0, 0, 9])
    with pytest.raises(ValueError, match="unknown scene kind"):
        schema("triples")


def test_heldout_compositions():
    singles = {(s.objects[0].shape, s.objects[0].colour) for s in every_single() if heldout(s)}
    assert singles == HELDOUT_SINGLE and len(singles) == 8
    per_shape = {sh: sum(1 for s, _ in singles if s == sh) for sh in SHAPE_NAMES}
    assert set(per_shape.values()) <= {1, 2} and len({c for _, c in singles}) == 8
    ordered = {(a, b) for a in SHAPE_NAMES for b in SHAPE_NAMES
               if heldout(pair(a, "red", "left of", b, "blue"))}
    assert len(ordered) == 5 and all((b, a) in ordered for a, b in ordered)  # closed under swapping


def test_drawing_is_todays_and_deterministic():
    images, labels, captions = shapes.draw_shapes(50, 7)
    again = shapes.draw_shapes(50, 7)
    assert np.array_equal(images, again[0]) and captions == again[2]
    assert images.shape == (50, 32, 32, 3) and images.dtype == np.uint8
    for label, text in zip(labels, captions, strict=True):
        assert parse(text).objects[0].shape == SHAPE_NAMES[label]


@pytest.mark.parametrize("split_of", [shapes.shapes_split, shapes.pairs_split])
def test_splits_hold_the_compositions_out_of_training(split_of):
    _, _, train = split_of("train")
    test_images, test_labels, test = split_of("test")
    assert 7_500 < len(train) < 10_000 and len(test) == 1_000 == len(test_images)
    assert not any(heldout(parse(c)) for c in train)
    assert sum(heldout(parse(c)) for c in test) == 500
    assert len(set(train)) > 700 and len(set(test)) > 300  # 864 single scenes can be drawn
    assert np.array_equal(split_of("test")[0], test_images)


def test_pair_images_show_their_relation():
    """The first object's pixels lie on the relation's side of the second's (colours read back)."""
    images, labels, captions = shapes.pairs_split("test")
    rgb = shapes._COLOURS
    checked = 0
    for img, label, text in zip(images[:300], labels[:300], captions[:300], strict=True):
        scene = parse(text)
        a, b = scene.objects
        if a.colour == b.colour:
            continue
        centres = []
        for o in (a, b):
            ys, xs = np.nonzero(np.abs(img.astype(int) - rgb[o.colour]).sum(axis=2) < 30)
            assert len(xs) > 10, text
            centres.append((xs.mean(), ys.mean()))
        (x1, y1), (x2, y2) = centres
        expect = {"left of": x1 < x2 - 5, "right of": x1 > x2 + 5, "above": y1 < y2 - 5, "below": y1 > y2 + 5}
        assert expect[scene.relation], text
        assert label == (0 if scene.relation in ("left of", "right of") else 1)
        checked += 1
    assert checked > 200
