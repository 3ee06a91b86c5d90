"""`genloop data from-feedback` in a subprocess: a text model's rated outputs become a dataset
tokenized as the model is, registered with its origin; too little feedback is one line saying
how many more it needs, and nothing is registered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genloop.feedback.collect import PreferenceIn, RatingIn, record_feedback, record_preference
from genloop.feedback.datasets import DEFAULT_THRESHOLD, MIN_RECORDS
from genloop.models.modeldir import ModelDir
from genloop.store import Store
from genloop.tokenizers import train_tokenizer

from ..conftest import run_cli  # noqa: TID252


@pytest.fixture
def rated(workspace: Path) -> Path:
    """Model m@1 (a tokenizer, no weights: nothing here runs it) with 16 rated outputs of eight
    prompts, and an A/B preference of a 17th output over one of them, recorded through the store."""
    store = Store()
    staged = workspace / "staging" / "m"
    staged.mkdir(parents=True)
    (staged / "config.json").write_text("{}")
    ModelDir(staged).write_tokenizer(train_tokenizer("char", ["abcdefghij prompt output 0123456789"]))
    mv = store.register_model("m", staged, family="gpt")
    made = [store.record_generation(model=mv, kind="text", request={"prompt": f"prompt {i // 2 % 8}"},
                                    seed=i, output=f"output {i}", file=None, content_hash=str(i),
                                    timings={}) for i in range(17)]
    for i, g in enumerate(made[:16]):
        record_feedback(store, g.id, RatingIn(rating=5 if i % 2 else 2))
    record_preference(store, PreferenceIn(chosen=made[16].id, rejected=made[0].id))
    store.close()
    return workspace


def test_from_feedback_registers_the_dataset(rated: Path, tmp_path: Path) -> None:
    records = tmp_path / "pairs.jsonl"
    r = run_cli(["data", "from-feedback", "m", "--objective", "dpo", "--out", str(records)], rated)
    assert r.returncode == 0, r.stderr
    store = Store()
    (ds,) = store.list_datasets()
    assert ds.hash in r.stdout and ds.name == "m-feedback-dpo" and ds.kind == "preferences"
    origin = ds.meta["origin"]
    assert origin["sources"] == {"preferences": 1, "rating_pairs": 8} and origin["records"] == 9
    assert origin["threshold"] == DEFAULT_THRESHOLD and origin["model"] == "m"
    assert "rating pairs 8" in r.stdout and "preferences 1" in r.stdout
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    assert len(rows) == 9 and all(len(row["generation_ids"]) == 2 for row in rows)
    # tokenized as the model is: the model's own tokenizer, not one trained on the records
    assert (Path(ds.path) / "tokenizer.json").read_text() == \
        (Path(store.resolve("m").path) / "tokenizer.json").read_text()
    again = run_cli(["data", "from-feedback", "m", "--objective", "dpo"], rated)
    assert again.returncode == 0 and ds.hash in again.stdout and len(store.list_datasets()) == 1
    kto = run_cli(["data", "from-feedback", "m@1", "--objective", "kto", "--threshold", "3"], rated)
    assert kto.returncode == 0, kto.stderr
    assert "desirable 8, undesirable 8" in kto.stdout and len(store.list_datasets()) == 2
    store.close()


def test_too_little_feedback_says_how_much_more(rated: Path) -> None:
    r = run_cli(["data", "from-feedback", "m", "--objective", "sft", "--min-records", "12"], rated)
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: model m has 8 usable liked outputs for sft; 4 more needed "
                                "(at least 12)")
    r = run_cli(["data", "from-feedback", "m", "--objective", "ppo"], rated)
    assert r.returncode == 2 and "objective 'ppo' is unknown" in r.stderr
    store = Store()
    assert store.list_datasets() == []
    store.close()


def test_the_help_names_the_defaults() -> None:
    r = run_cli(["data", "from-feedback", "--help"], Path("/nonexistent-home"))
    assert r.returncode == 0 and "Examples" in r.stdout
    assert f"[default: {DEFAULT_THRESHOLD}]" in r.stdout
    assert f"minimum, {MIN_RECORDS['sft']}]" in r.stdout and len(set(MIN_RECORDS.values())) == 1
