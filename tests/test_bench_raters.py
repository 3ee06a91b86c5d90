"""The loop benchmark's scripted raters (bench/raters.py): the taste they post as feedback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: bench/

from bench.raters import ShakespeareBrevity, TangVerse, compare, poem_lines, title_split  # noqa: E402

FIVE = "秦川雄帝宅，函谷壯皇居。"
FIVE2 = "綺殿千尋起，離宮百雉餘。"
SEVEN = "別處一程心未盡，不人無客最重看。"
SEVEN2 = "今日東都何似我，故京無處在仙城。"


@pytest.mark.parametrize("poem", [
    f"{FIVE}\n{FIVE2}",
    f"{FIVE}\n{FIVE2}\n{FIVE}\n{FIVE2}",
    f"{SEVEN}\n{SEVEN2}",
    f"{SEVEN}\n{SEVEN2}\n{SEVEN}\n{SEVEN2}\n",
    "何如肆轍跡，萬里賞瑤池？\n" + FIVE2,  # the corpus's own question mark
    f"{FIVE}\n\n{FIVE2}<|endoftext|>junk",  # blank lines and what follows the end marker do not count
])
def test_well_formed_verses_are_liked(poem):
    rater = TangVerse()
    assert rater.well_formed(poem)
    assert rater.score(poem) == 1.0
    assert rater.rating(poem) == 5


@pytest.mark.parametrize(("poem", "score"), [
    (FIVE, 0.5),  # one line: right shape, wrong count
    (f"{FIVE}\n{FIVE2}\n{FIVE}", 0.5),  # three lines
    (f"{FIVE}\n{SEVEN}", 0.5),  # halves of 5 and of 7 mixed: one line of the common length
    (f"{FIVE}\n{SEVEN}\n{SEVEN2}\n{SEVEN}", 0.75),
    ("秦川雄帝宅，函谷壯皇。\n" + FIVE2, 0.5),  # halves of 5 and 4
    ("秦川雄帝，函谷壯皇。\n綺殿千尋，離宮百雉。", 0.0),  # halves of 4
    ("秦川雄帝宅。函谷壯皇居。\n" + FIVE2, 0.5),  # a full stop where the comma belongs
    ("秦川雄帝宅，函谷壯皇居\n" + FIVE2, 0.5),  # no closing mark
    (f"{FIVE}{FIVE2}", 0.0),  # two couplets on one line
    ("", 0.0),
    ("hello, world.", 0.0),
])
def test_ill_formed_verses_get_a_graded_score_below_one(poem, score):
    rater = TangVerse()
    assert rater.score(poem) == pytest.approx(score)
    assert not rater.well_formed(poem)
    assert rater.rating(poem) <= 3  # below the threshold of 4: never a liked output


def test_ratings_follow_the_score():
    rater = TangVerse()
    assert [rater.rating(p) for p in ["", FIVE, f"{FIVE}\n{SEVEN}\n{SEVEN2}\n{SEVEN}"]] == [1, 2, 3]


def test_preferences_are_graded_with_ties():
    rater = TangVerse()
    good, half, bad = f"{FIVE}\n{FIVE2}", FIVE, "秦川"
    assert rater.prefer(good, half) == 1 and rater.prefer(half, good) == -1
    assert rater.prefer(half, bad) == 1
    assert rater.prefer(good, f"{SEVEN}\n{SEVEN2}") == 0  # both well-formed: a tie
    assert rater.prefer(bad, "") == 0


def test_win_rate_leaves_ties_out_and_counts_them_half_on_request():
    rater = TangVerse()
    good, bad = f"{FIVE}\n{FIVE2}", FIVE
    c = compare(rater, [good, good, good, bad, good], [bad, bad, good, good, good])
    assert (c.wins, c.losses, c.ties) == (2, 1, 2)
    assert c.win_rate == pytest.approx(2 / 3)
    assert c.win_rate_ties_half == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="2 child outputs against 1"):
        compare(rater, [good, good], [bad])


def test_poem_lines_stop_at_the_end_marker():
    assert poem_lines(f"\n{FIVE}\n  \n{FIVE2}\n<|endoftext|>{SEVEN}") == [FIVE, FIVE2]


def test_the_shakespeare_taste_likes_short_speeches_that_end_a_sentence():
    rater = ShakespeareBrevity(limit=20)
    assert rater.score("I will go.") == 1.0 and rater.rating("I will go.") == 5
    assert rater.score("I will go") == 0.5
    long = "I will go, " * 4 + "now."
    assert rater.score(long) == pytest.approx(20 / len(long))
    assert rater.prefer("I will go.", long) == 1
    assert rater.rating("") == 1


def test_held_out_titles_never_occur_in_the_training_split(tmp_path):
    def write(name, titles):
        (tmp_path / name).write_text("".join(json.dumps({"title": t, "paragraphs": [FIVE]}) + "\n"
                                             for t in titles), encoding="utf-8")

    write("train.jsonl", [f"t{i}" for i in range(50)] + ["t3"])
    write("valid.jsonl", [f"t{i}" for i in range(40, 80)])
    feedback, held = title_split(tmp_path, feedback=20, held_out=30, seed=1)
    assert len(feedback) == len(set(feedback)) == 20 and len(held) == len(set(held)) == 30
    assert set(feedback) <= {f"t{i}" for i in range(50)}
    assert set(held) <= {f"t{i}" for i in range(50, 80)}  # t40..t49 are training titles too
    assert title_split(tmp_path, feedback=20, held_out=30, seed=1) == (feedback, held)
    with pytest.raises(ValueError, match="there are 50 \\+ 30"):
        title_split(tmp_path, feedback=20, held_out=31)


def test_held_out_titles_do_not_depend_on_the_feedback_count(tmp_path):
    lines = [json.dumps({"title": f"t{i}", "paragraphs": [FIVE]}) + "\n" for i in range(300)]
    (tmp_path / "train.jsonl").write_text("".join(lines[:200]), encoding="utf-8")
    (tmp_path / "valid.jsonl").write_text("".join(lines[200:]), encoding="utf-8")
    assert title_split(tmp_path, 10, 50)[1] == title_split(tmp_path, 150, 50)[1]


def test_titles_longer_than_a_prompt_can_be_are_left_out(tmp_path):
    long = "長" * 21
    for name in ("train.jsonl", "valid.jsonl"):
        (tmp_path / name).write_text("".join(json.dumps({"title": t, "paragraphs": [FIVE]}) + "\n"
                                             for t in [long, f"{name}-a", f"{name}-b"]), encoding="utf-8")
    feedback, held = title_split(tmp_path, 2, 2)
    assert long not in feedback + held
