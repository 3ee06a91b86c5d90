"""The reward model and best-of-n: the ``reward`` objective on hand-computed values; a reward
model started from a gpt parent learns an obvious preference (held-out pair accuracy on its
card); ``score`` ranks; ``best_of`` returns the best candidates by the reward model (or by mean
token log-prob), seeded and replayable, the same on the Python, CLI and HTTP faces."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

import genloop
from genloop.errors import InvalidInput, RecipeError
from genloop.generation.reward import mean_logprobs, ranked, score
from genloop.generation.service import replay
from genloop.models.family import SequenceBatch
from genloop.models.registry import get_family
from genloop.store import Store
from genloop.training.objectives import get_objective, reward
from genloop.training.preference_batches import PreferenceBatch

from ..conftest import _OBJECTS, _SUBJECTS, tiny_recipe_dict, write_corpus  # noqa: TID252

PROMPT = "The cat"
GEN = dict(max_new_tokens=12, temperature=1.0, seed=3)


def test_reward_objective_on_hand_computed_values():
    """Scores 2 vs 0 and 0 vs 1: losses −log σ(2) and −log σ(−1), margins 2 and −1."""
    def first_token_score(model, batch: SequenceBatch) -> torch.Tensor:
        return batch.inputs[:, 0].float()

    family = get_family("reward")
    from dataclasses import replace

    toy = replace(family, score=first_token_score)
    rows = lambda *v: SequenceBatch(torch.tensor([[x, 0] for x in v]), torch.zeros(len(v), 2,  # noqa: E731
                                    dtype=torch.long), torch.ones(len(v), 2, dtype=torch.bool))
    out = reward(toy, torch.nn.Identity(), PreferenceBatch(rows(2, 0), rows(0, 1)))
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert out["loss"].item() == pytest.approx((-math.log(sig(2)) - math.log(sig(-1))) / 2)
    assert out["reward_margin"].item() == pytest.approx(0.5)
    assert out["reward_accuracy"].item() == pytest.approx(0.5)


def test_the_reward_objective_needs_a_scoring_family():
    with pytest.raises(RecipeError, match="needs a family with score"):
        get_objective("reward", get_family("gpt"), "preferences")
    assert get_objective("reward", get_family("reward"), "preferences").needs == ("score",)


# --- one workspace for the module: a gpt parent, preferences, a reward model --------------------


def _pairs(n: int, seed: int) -> list[dict]:
    """Chosen completions say 'aaa', rejected ones 'bbb': an obvious taste (short enough that
    the completion is never cut to the tiny context)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = rng.choice(_SUBJECTS)
        body = f" {rng.choice(_OBJECTS)}"
        rows.append({"prompt": prompt, "chosen": body + ", aaa.", "rejected": body + ", bbb."})
    return rows


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("reward")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLOOP_HOME", str(root / "home"))
        mp.delenv("GENLOOP_DB_URL", raising=False)
        mp.delenv("GENLOOP_CACHE", raising=False)
        corpus = write_corpus(root / "corpus.txt")
        base = genloop.train(tiny_recipe_dict(corpus, name="base", steps=40)).model_ref
        src = root / "prefs.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in _pairs(240, seed=1)), encoding="utf-8")
        recipe = tiny_recipe_dict("unused", name="rm", steps=40, family="reward", lr=3e-3,
                                  warmup_steps=2)
        recipe.update(data={"kind": "preferences", "source": str(src)}, parent=base, eval={})
        rm = genloop.train(recipe).model_ref  # no objective named: the family's own, "reward"
        yield {"base": base, "rm": rm, "src": src, "corpus": corpus}
    torch.set_num_threads(before)


def test_a_reward_model_learns_the_preference_and_shows_it_on_its_card(ws):
    assert ws["rm"] == "rm@1"
    rm = genloop.load("rm")
    assert rm.family.name == "reward" and not rm.family.generative
    assert rm.directory.lineage()["parent"] == ws["base"]
    assert rm.metrics["preference_accuracy"] == 1.0, rm.metrics
    assert rm.metrics["reward_margin"] > 1.0
    assert "held-out pair accuracy" in rm.card and "A reward model" in rm.card
    # started from its parent: the body's weights moved from the gpt's, but began there
    base = genloop.load(ws["base"])
    assert rm.network.body.wte.weight.shape == base.network.wte.weight.shape


def test_a_reward_model_is_evaluated_on_unpaired_preferences_by_its_score(ws, tmp_path):
    from genloop.data.preferences import PreferencesDataConfig
    from genloop.evaluation.preferences import evaluate_preferences

    rows = [{"prompt": r["prompt"], "completion": r[side], "label": side == "chosen"}
            for r in _pairs(60, seed=7) for side in ("chosen", "rejected")]
    src = tmp_path / "kto.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    rm = genloop.load("rm")
    data = PreferencesDataConfig(source=str(src), form="unpaired").prepare(tokenizer=rm.tokenizer)
    got = evaluate_preferences(rm.family, rm.network, data)
    assert got["desirable_score"] > got["undesirable_score"] + 1.0, got
    assert got["desirability_gap_score"] == pytest.approx(
        got["desirable_score"] - got["undesirable_score"])


def test_score_ranks_unseen_pairs(ws):
    rows = _pairs(20, seed=99)
    prompts = [r["prompt"] for r in rows]
    good = score("rm", prompts, [r["chosen"] for r in rows])
    bad = score(genloop.load("rm"), prompts, [r["rejected"] for r in rows])
    assert len(good) == 20 and all(isinstance(v, float) for v in good)
    assert sum(g > b for g, b in zip(good, bad, strict=True)) >= 19
    # batched or one at a time: the same scores
    assert score("rm", prompts[:3], [r["chosen"] for r in rows[:3]], batch_size=1) == \
        pytest.approx(good[:3], abs=1e-5)
    with pytest.raises(InvalidInput, match="not a reward model"):
        score(ws["base"], prompts, [r["chosen"] for r in rows])


def test_a_reward_model_needs_a_gpt_parent_of_its_sizes(ws):
    lstm = genloop.train(tiny_recipe_dict(ws["corpus"], name="lstm-base", family="lstm",
                                          steps=2)).model_ref
    recipe = tiny_recipe_dict("unused", name="rm-bad", steps=2, family="reward")
    recipe.update(data={"kind": "preferences", "source": str(ws["src"])}, parent=lstm, eval={})
    with pytest.raises(RecipeError, match="starts from a gpt"):
        genloop.train(recipe)
    recipe.update(parent=ws["base"])
    recipe["model"]["config"]["n_embd"] = 32
    with pytest.raises(RecipeError, match="n_embd is 64, this reward model's is 32"):
        genloop.train(recipe)


def test_a_reward_model_does_not_generate(ws):
    with pytest.raises(InvalidInput, match="does not generate"):
        genloop.load("rm").generate(PROMPT, max_new_tokens=4)


def test_best_of_returns_the_best_candidates_by_the_reward_model(ws):
    base = genloop.load(ws["base"])
    best = base.generate(PROMPT, best_of=4, num_samples=2, reward_model="rm", **GEN)
    # the candidates are the choices of the same request with num_samples = best_of
    candidates = base.generate(PROMPT, num_samples=4, **GEN)
    scores = score("rm", [c.prompt for c in candidates], [c.text for c in candidates])
    top = sorted(range(4), key=lambda i: -scores[i])[:2]
    assert [o.text for o in best] == [candidates[i].text for i in top]
    assert [o.seed for o in best] == [GEN["seed"] + i for i in top]
    assert [o.score for o in best] == pytest.approx([scores[i] for i in top], abs=1e-5)
    assert best[0].score >= best[1].score
    again = base.generate(PROMPT, best_of=4, num_samples=2, reward_model="rm", **GEN)
    assert [o.text for o in again] == [o.text for o in best]  # seeded: the same every time
    # each returned choice is recorded with its ranking, and replays alone from its record
    store = Store()
    records = [g for g in store.list_generations(limit=50) if g.request.get("ranking")][:2]
    record = next(r for r in records if r.seed == best[0].seed)
    ranking = record.request["ranking"]
    assert ranking["by"] == "rm@1" and ranking["best_of"] == 4 and ranking["rank"] == 0
    assert ranking["score"] == pytest.approx(best[0].score)
    assert "best_of" not in record.request and "reward_model" not in record.request
    again_one = replay(record.id)
    assert again_one.matches and again_one.output == best[0].text


def test_best_of_without_a_reward_model_ranks_by_mean_token_logprob(ws):
    base = genloop.load(ws["base"])
    best = base.generate([PROMPT, "A dog"], best_of=3, **GEN)
    assert len(best) == 2 and [o.prompt for o in best] == [PROMPT, "A dog"]
    candidates = base.generate([PROMPT, "A dog"], num_samples=3, **GEN)
    lp = mean_logprobs(base.family, base.network, base.tokenizer,
                       [c.prompt for c in candidates], [c.text for c in candidates])
    picked = [i for group in ranked(lp, 2, 3, 1) for i in group]
    assert [o.text for o in best] == [candidates[i].text for i in picked]
    assert [o.score for o in best] == pytest.approx([lp[i] for i in picked], abs=1e-5)


def test_best_of_bounds_are_one_line_errors(ws):
    base = genloop.load(ws["base"])
    with pytest.raises(InvalidInput, match=r"best_of \(2\) must be at least num_samples \(3\)"):
        base.generate(PROMPT, best_of=2, num_samples=3)
    with pytest.raises(InvalidInput, match="give best_of too"):
        base.generate(PROMPT, reward_model="rm")
    with pytest.raises(InvalidInput, match="cannot stream"):
        list(base.stream(PROMPT, best_of=2))
    with pytest.raises(InvalidInput, match="reward_model: .*nope"):
        base.generate(PROMPT, best_of=2, reward_model="nope")
    with pytest.raises(InvalidInput, match="reward_model: base@1 is a gpt model, not a reward"):
        base.generate(PROMPT, best_of=2, reward_model="base")


def test_cli_best_of(ws):
    from typer.testing import CliRunner

    from genloop.cli.main import app

    args = ["generate", ws["base"], "-p", PROMPT, "--best-of", "4", "-n", "2", "--reward-model",
            "rm", "--seed", "3", "--temperature", "1.0", "--max-new-tokens", "12", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    expected = genloop.load(ws["base"]).generate(PROMPT, best_of=4, num_samples=2,
                                                 reward_model="rm", **GEN)
    assert [(r["text"], r["seed"]) for r in lines] == [(o.text, o.seed) for o in expected]
    assert lines[0]["score"] == pytest.approx(expected[0].score)


def test_http_best_of_through_the_openai_client(ws):
    openai = pytest.importorskip("openai")
    from fastapi.testclient import TestClient

    from genloop.serving.app import create_app
    from genloop.serving.settings import ServeConfig

    expected = genloop.load(ws["base"]).generate(PROMPT, best_of=4, num_samples=2,
                                                 reward_model="rm", **GEN)
    with TestClient(create_app(ServeConfig(auth=False))) as http:
        client = openai.OpenAI(base_url="http://testserver/v1", api_key="none", http_client=http,
                               max_retries=0)
        reply = client.completions.create(model=ws["base"], prompt=PROMPT, n=2, best_of=4, seed=3,
                                          max_tokens=12, temperature=1.0,
                                          extra_body={"reward_model": "rm"})
        # the batcher decodes each candidate as the Python face does: the same choices
        assert [c.text for c in reply.choices] == [o.text for o in expected]
        assert [c.index for c in reply.choices] == [0, 1]
        candidates = genloop.load(ws["base"]).generate(PROMPT, num_samples=4, **GEN)
        assert reply.usage.completion_tokens == sum(c.tokens for c in candidates)  # all 4 drawn
        gid = reply.choices[0].model_extra["generation_id"]
        record = http.get(f"/v1/generations/{gid}").json()
        assert record["request"]["ranking"]["by"] == "rm@1"
        assert record["seed"] == expected[0].seed
        body = {"model": ws["base"], "prompt": PROMPT, "max_tokens": 4}
        for extra, param in [({"best_of": 2, "stream": True}, "best_of"),
                             ({"reward_model": "rm"}, "reward_model"),
                             ({"best_of": 2, "reward_model": "base"}, None),
                             ({"best_of": 2, "reward_model": "nope"}, None)]:
            r = http.post("/v1/completions", json={**body, **extra})
            assert r.status_code == 400, (extra, r.text)
            if param:
                assert r.json()["error"]["param"] == param
        r = http.post("/v1/completions", json={**body, "model": "rm"})
        assert r.status_code == 400 and "does not generate" in r.json()["error"]["message"]
