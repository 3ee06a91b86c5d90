"""Text ↔ image evaluation: faithfulness, caption scores, BLEU/CIDEr, the recogniser, the wiring."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from genloop.data import scenes
from genloop.data.shapes import shapes_split
from genloop.errors import InvalidInput
from genloop.evaluation.image_text import (
    ImageTextEvalConfig,
    bleu_cider,
    canonical_ids,
    caption_scores,
    diversity,
    evaluate_recogniser,
    evaluate_text_to_image,
    faithfulness,
    swap_spec,
)
from genloop.models.family import Family, ImageRequest
from genloop.models.recogniser import FAMILY as RECOGNISER
from genloop.models.recogniser import RecogniserConfig, canonical
from genloop.models.text_encoder import tokenize_prompts
from genloop.tokenizers import train_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
SINGLE, PAIRS = scenes.schema("single"), scenes.schema("pairs")


def test_faithfulness_counts_an_image_only_when_every_attribute_is_read_back():
    want = np.array([[0, 1, 2], [0, 1, 2], [3, 3, -1], [1, 1, 1]])
    read = np.array([[0, 1, 2], [0, 1, 0], [3, 3, 0], [1, 0, 1]])  # row 2's slot 2 is absent
    m = faithfulness(read, want, ["a", "b", "c"], heldout=np.array([False, False, True, True]))
    assert m["faithfulness"] == 0.5
    assert m["faithfulness_seen"] == 0.5 and m["faithfulness_heldout"] == 0.5
    assert m["b_accuracy"] == 0.75 and m["c_accuracy"] == pytest.approx(2 / 3)
    with pytest.raises(InvalidInput, match="faithfulness"):
        faithfulness(read[:, :2], want, ["a", "b", "c"])


def test_two_descriptions_of_one_pair_are_one_canonical_attribute_row():
    spec = swap_spec(PAIRS)
    assert spec["swap_slot"] == 2 and spec["swap_slots"] == (3, 4, 2, 0, 1)
    assert swap_spec(SINGLE)["swap_slot"] == -1
    a = scenes.parse("a red circle left of a blue square")
    b = scenes.parse("a blue square right of a red circle")
    assert a is not None and b is not None
    rel = list(PAIRS["values"][2])
    raw_b = [scenes.SHAPE_NAMES.index("square"), scenes.COLOURS.index("blue"), rel.index("right of"),
             scenes.SHAPE_NAMES.index("circle"), scenes.COLOURS.index("red")]
    assert canonical_ids(np.array([raw_b]), PAIRS).tolist() == [scenes.attribute_ids(a)]
    assert scenes.attribute_ids(a) == scenes.attribute_ids(b)
    config = RecogniserConfig(attribute_sizes=tuple(len(v) for v in PAIRS["values"]), **spec)
    twice = canonical(config, canonical(config, torch.tensor([raw_b])))
    assert twice.tolist() == [scenes.attribute_ids(a)]


def test_caption_scores_parse_any_phrasing_and_punish_one_sentence_for_everything():
    truth = [scenes.single("circle", "red", "small", "top", "left"),
             scenes.single("square", "blue", "large", "bottom", "right"),
             scenes.single("cross", "white", "medium", "middle", "centre")]
    want = np.array([scenes.attribute_ids(s) for s in truth])
    refs = [scenes.references(s) for s in truth]
    good = [scenes.references(s)[1] for s in truth]  # another phrasing of the truth: still exact
    m = caption_scores(good, want, SINGLE, np.array([False, True, False]), refs)
    assert m["caption_accuracy"] == 1.0 and m["caption_accuracy_heldout"] == 1.0
    assert m["diversity"] == 1.0 and m["bleu4"] > 0.9 and m["cider"] > 1.0
    same = [scenes.caption(truth[0])] * 3
    bad = caption_scores(same, want, SINGLE, None, refs)
    assert bad["caption_accuracy"] == pytest.approx(1 / 3) and bad["diversity"] == pytest.approx(1 / 3)
    assert bad["cider"] < m["cider"] and bad["bleu4"] < m["bleu4"]
    junk = caption_scores(["purple elephants", "", "a"], want, SINGLE, None, refs)
    assert junk["caption_accuracy"] == 0.0 and junk["parsed"] == 0.0 and junk["shape_accuracy"] == 0.0


def test_bleu_cider_is_pycocoevalcap_on_normalised_text():
    refs = [["a small red circle at the top left", "a little red circle in the top left"]]
    assert bleu_cider(["A small red circle, at the top left."], refs)["bleu4"] == pytest.approx(1.0)
    assert diversity(["A b.", "a b", "c"]) == pytest.approx(2 / 3)
    with pytest.raises(InvalidInput, match="reference"):
        bleu_cider(["x"], [[]])


@pytest.fixture(scope="module")
def single_shapes():
    """400 real test images of single shapes with everything an ImageTextDataset gives."""
    images, labels, captions = shapes_split("test")
    images, captions = images[:400], captions[:400]
    parsed = [scenes.parse(c) for c in captions]
    assert all(p is not None for p in parsed)
    return SimpleNamespace(
        name="shapes", test=images.transpose(0, 3, 1, 2), captions={"test": captions},
        attributes={"test": np.array([scenes.attribute_ids(p) for p in parsed])},
        test_heldout=np.array([scenes.heldout(p) for p in parsed]), schema=SINGLE,
        tokenizer=train_tokenizer("char", captions), channels=3, image_size=32)


def _recogniser(dataset, steps: int):
    config = RECOGNISER.make_config("tiny", channels=3, image_size=32,
                                    attribute_sizes=tuple(len(v) for v in SINGLE["values"]))
    torch.manual_seed(0)
    model = RECOGNISER.build(config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    images = torch.from_numpy(dataset.test).float().div(127.5).sub(1.0)
    attrs = torch.from_numpy(dataset.attributes["test"])
    losses = []
    for step in range(steps):
        idx = torch.arange(step * 32, step * 32 + 32) % len(images)
        batch = SimpleNamespace(images=images[idx], labels=attrs[idx, 0], attributes=attrs[idx],
                                generator=torch.Generator().manual_seed(step))
        loss = RECOGNISER.loss(model, batch)["loss"]
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), losses


def test_the_recogniser_learns_every_attribute_of_real_shapes(single_shapes):
    model, losses = _recogniser(single_shapes, 40)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    m = evaluate_recogniser(model, single_shapes)
    assert set(m) >= {"test_accuracy", "test_accuracy_seen", "test_accuracy_heldout", "shape_accuracy",
                      "position_accuracy"}
    assert m["colour_accuracy"] > 1 / 8  # better than chance after 40 steps


def _echo_family(dataset, constant: bool) -> Family:
    """A text → image 'model' that draws the real test image of each prompt (or always the
    first one): what a perfect (or a useless) generator would. Prompts come in test order."""
    drawn = [0]
    pixels = torch.from_numpy(dataset.test).float().div(127.5).sub(1.0)

    def sample(model, request: ImageRequest, generators):
        assert request.prompt_ids is not None and request.prompt_mask is not None
        out = []
        for ids, mask in zip(request.prompt_ids, request.prompt_mask, strict=True):
            i = drawn[0]
            assert dataset.tokenizer.decode(ids[mask].tolist()) == dataset.captions["test"][i]
            out.append(pixels[0 if constant else i])
            drawn[0] += 1
        return torch.stack(out)

    return Family(name="echo", kinds=("image_text",), conditioning="text", config=RecogniserConfig,
                  presets={}, build=lambda c: None, loss=lambda m, b: {}, sample=sample)


def test_faithfulness_of_a_perfect_generator_is_the_recognisers_accuracy(single_shapes):
    recogniser, _ = _recogniser(single_shapes, 30)
    config = SimpleNamespace(text_encoder=SimpleNamespace(max_tokens=64))
    cfg = ImageTextEvalConfig(num_samples=400, batch_size=64)
    perfect, fake = evaluate_text_to_image(_echo_family(single_shapes, False), torch.nn.Identity(), config,
                                           single_shapes, cfg, recogniser, seed=0)
    on_real = evaluate_recogniser(recogniser, single_shapes)
    assert perfect["faithfulness"] == pytest.approx(on_real["test_accuracy"])
    assert perfect["faithfulness_heldout"] == pytest.approx(on_real["test_accuracy_heldout"])
    assert perfect["fid"] == pytest.approx(0.0, abs=1e-6) and fake.shape == (400, 3, 32, 32)
    useless, _ = evaluate_text_to_image(_echo_family(single_shapes, True), torch.nn.Identity(), config,
                                        single_shapes, cfg, recogniser, seed=0)
    assert useless["faithfulness"] < perfect["faithfulness"] and useless["fid"] > 1.0


def test_prompts_are_tokenized_as_the_model_reads_them(single_shapes):
    ids, mask = tokenize_prompts(single_shapes.tokenizer, ["a red circle", "a b"], 64)
    assert mask.sum(1).tolist() == [12, 3]
