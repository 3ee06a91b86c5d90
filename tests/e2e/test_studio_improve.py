"""The loop in the studio, in a real browser (Playwright driving Debian's chromium) against a
real `genloop serve --worker`: outputs rated on the Text page (and in History), the Improve
page's feedback summary, a DPO tune started there and watched to its end, the new version
compared blind with its parent (same prompt, same seed, sides shuffled, names revealed only
after the choice) with the preference recorded, and the lineage on the Models page.

GENLOOP_SCREENSHOTS=1 writes docs/img/studio-improve.png and studio-compare.png; a normal run
writes nothing outside its temporary directory.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ..conftest import (  # noqa: TID252
    CHROMIUM,
    SCREENSHOTS,
    require_chromium,
    run_cli,
    serving,
    shot,
    tiny_recipe_dict,
    wait_until,
    write_corpus,
)

STEPS = 4  # tune steps: enough to register a child, quick on two shared cores

require_chromium()

from playwright.sync_api import Locator, Page, expect, sync_playwright  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def workspace_with_story(tmp_path: Path) -> tuple[Path, str]:
    """A workspace with a text model `story` trained by the CLI, and an API key: (home, key)."""
    home = tmp_path / "home"
    corpus = write_corpus(tmp_path / "corpus.txt", size=30_000)
    (tmp_path / "story.yaml").write_text(yaml.safe_dump(tiny_recipe_dict(corpus, name="story", steps=30)))
    r = run_cli(["train", str(tmp_path / "story.yaml")], home, timeout=600)
    assert r.returncode == 0, r.stderr
    r = run_cli(["keys", "create", "studio"], home)
    assert r.returncode == 0, r.stderr
    return home, r.stdout.strip()


def generate_text(page: Page, prompt: str, *, seed: int) -> str:
    """Generate on the Text page with a fixed seed; the new generation's id."""
    page.fill("#text-prompt", prompt)
    page.fill("#text-max-tokens", "12")
    page.uncheck("#text-seed-random")
    page.fill("#text-seed", str(seed))
    page.click("#text-generate")
    gid = page.locator("#text-result .generation-id")
    expect(gid).to_be_visible(timeout=30_000)
    expect(gid).not_to_have_attribute("data-generation-id", "")
    return gid.get_attribute("data-generation-id") or ""


def test_rate_tune_and_compare_blind_in_the_studio(workspace_with_story: tuple[Path, str]) -> None:
    home, key = workspace_with_story
    with serving(home, "--worker") as server, sync_playwright() as p, server.client(key) as api:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            viewport = {"width": 1360, "height": 1120 if SCREENSHOTS else 900}
            context = browser.new_context(http_credentials={"username": "studio", "password": key},
                                          viewport=viewport, color_scheme="light")
            page = context.new_page()
            page_errors: list[str] = []
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.on("console", lambda m: page_errors.append(m.text) if m.type == "error" else None)
            page.goto(server.url + "/")
            expect(page.locator("#text-model option[value='story@1']")).to_have_count(1)

            # 1. Rate outputs where they are made: a liked and a disliked answer to one prompt
            #    (a preference pair for DPO), and a thumbs up in History
            liked = generate_text(page, "The cat", seed=1)
            page.click("#text-result button[data-rating='5']")
            expect(page.locator("#text-result .confirm")).to_contain_text("5")
            disliked = generate_text(page, "The cat", seed=2)
            page.click("#text-result button[data-rating='1']")
            expect(page.locator("#text-result .confirm")).to_contain_text("1")
            page.click("a[data-route='history']")
            row = page.locator(f"#history-rows tr[data-id='{liked}']")
            row.locator("button[data-thumbs='up']").click()
            expect(row.locator(".confirm")).to_contain_text("✓")
            def feedback(gid: str) -> list[dict]:
                return api.get(f"/v1/generations/{gid}").json()["feedback"]

            kinds = {g: sorted((f["kind"], f["value"]) for f in feedback(g)) for g in (liked, disliked)}
            assert kinds == {liked: [("rating", 5), ("thumbs", 1)], disliked: [("rating", 1)]}

            def summary() -> dict:
                r = api.get("/v1/models/story@1/feedback")
                assert r.status_code == 200, r.text
                return r.json()

            def stat(name: str) -> Locator:
                return page.locator(f"#feedback-stats [data-stat='{name}'] .stat-value")

            # 2. Improve: the feedback as the server counts it; too little for DPO says how much more
            page.click("a[data-route='improve']")
            page.select_option("#improve-model", "story@1")
            page.click(".objective-choice label:has(input[value=dpo])")
            dpo = page.locator("#feedback-usable .usable-row[data-objective='dpo']")
            expect(dpo).to_have_class("usable-row current")
            first = summary()
            expect(stat("ratings")).to_have_text("2")
            expect(stat("thumbs_up")).to_have_text("1")
            expect(dpo.locator(".usable-count strong")).to_have_text(str(first["usable"]["dpo"]))
            expect(dpo.locator(".usable-state")).to_have_text(f"{first['needed']['dpo']} more needed")
            expect(page.locator("#tune-start")).to_be_disabled()

            # the rest of the feedback a tune needs, as other users would give it (A/B preferences)
            seed = 100
            while summary()["usable"]["dpo"] < summary()["min_records"]["dpo"]:
                pair = [api.post("/v1/completions", json={"model": "story@1", "prompt": f"Day {seed}",
                                                         "max_tokens": 8, "seed": seed + k}).json()
                        ["choices"][0]["generation_id"] for k in (0, 1)]
                r = api.post("/v1/preferences", json={"chosen": pair[0], "rejected": pair[1]})
                assert r.status_code == 201, r.text
                seed += 2
            before = summary()
            page.click("#improve-refresh")
            expect(stat("preferences")).to_have_text(str(before["feedback"]["preferences"]))
            expect(stat("ratings")).to_have_text(str(before["feedback"]["ratings"]))
            expect(stat("generations")).to_have_text(str(before["generations"]))
            expect(dpo.locator(".usable-count strong")).to_have_text(str(before["usable"]["dpo"]))
            expect(dpo.locator(".usable-state")).to_have_text("ready")
            expect(page.locator("#tune-start")).to_be_enabled()

            # 3. Tune from it and watch the job to its end: the progress bar fills from step events
            page.fill("#tune-steps", str(STEPS))
            page.click("#tune-start")
            expect(page.locator("#job-card")).to_be_visible()
            job_id = page.locator("#job-id").text_content() or ""
            assert job_id.startswith("ftjob-")
            job = api.get(f"/v1/fine_tuning/jobs/{job_id}").json()
            assert job["model"] == "story@1" and job["hyperparameters"]["steps"] == STEPS
            expect(page.locator(f"#jobs-rows tr[data-id='{job_id}']")).to_have_count(1)
            expect(page.locator("#job-status")).to_have_text("succeeded", timeout=300_000)
            job = api.get(f"/v1/fine_tuning/jobs/{job_id}").json()
            assert job["status"] == "succeeded" and job["fine_tuned_model"] == "story@2", job
            expect(page.locator(".progress")).to_have_attribute("aria-valuenow", "100")
            expect(page.locator("#job-meta .job-step")).to_have_text(f"step {STEPS} of {STEPS}")
            expect(page.locator("#job-meta .job-loss")).to_be_visible()  # the last step's loss
            expect(page.locator("#job-result .new-version")).to_have_text("story@2")
            expect(page.locator(f"#jobs-rows tr[data-id='{job_id}']")).to_contain_text("story@2")
            shot(page, "improve")

            # 4. Compare blind: same prompt and seed for both, no names until the choice
            page.click("#job-result .compare-child")
            expect(page.locator("#page-compare")).to_be_visible()
            expect(page.locator("#compare-child")).to_have_value("story@2")
            expect(page.locator("#compare-parent")).to_have_value("story@1")
            # the page starts from the parent's recent prompts (loaded after it shows): wait for
            # them, then ask our own, so the two writers of the box never race
            expect(page.locator("#compare-prompts")).not_to_have_value("", timeout=30_000)
            page.fill("#compare-prompts", "The cat\nA dog")
            page.fill("#compare-seed", "7")
            page.click("#compare-start")
            sides = page.locator("#arena .contender")
            expect(sides).to_have_count(2, timeout=30_000)
            assert "story@" not in (page.locator("#arena").text_content() or "")  # blind
            ids = [sides.nth(i).get_attribute("data-generation-id") or "" for i in (0, 1)]
            records = [api.get(f"/v1/generations/{g}").json() for g in ids]
            assert sorted(r["model"] for r in records) == ["story@1", "story@2"]
            assert {r["seed"] for r in records} == {7}
            assert {r["request"]["prompt"] for r in records} == {"The cat"}

            sides.nth(0).locator(".prefer").click()
            expect(page.locator("#arena .contender.chosen")).to_have_count(1)
            winner = "child" if records[0]["model"] == "story@2" else "parent"
            expect(sides.nth(0)).to_have_attribute("data-role", winner)
            expect(sides.nth(0).locator(".reveal-model")).to_have_text(records[0]["model"])
            expect(sides.nth(1).locator(".reveal-model")).to_have_text(records[1]["model"])
            expect(page.locator(f"#tally .tally-{winner}")).to_have_text("1")
            expect(page.locator("#tally-rounds li")).to_have_count(1)
            prefs = [f for f in feedback(ids[0]) if f["kind"] == "preference"]
            assert [(f["generation_id"], f["other_generation_id"]) for f in prefs] == [(ids[0], ids[1])]
            assert summary()["feedback"]["preferences"] == before["feedback"]["preferences"] + 1
            shot(page, "compare")

            # the next prompt (seed + 1), skipped: revealed, counted, nothing recorded
            page.click("#arena-next")
            wait_until(lambda: page.locator("#arena .contender").first.get_attribute("data-generation-id")
                       not in ids, 30)
            expect(page.locator("#arena-prompt")).to_have_text("A dog")
            page.click("#arena-skip")
            expect(page.locator("#tally-rounds li.skipped")).to_have_count(1)
            expect(page.locator("#tally")).to_contain_text("1 skipped")
            expect(page.locator("#compare-status")).to_contain_text("All 2 prompts compared")
            assert summary()["feedback"]["preferences"] == before["feedback"]["preferences"] + 1

            # 5. Models: the lineage parent -> child with each version's metrics
            page.click("a[data-route='models']")
            tree = page.locator("#lineage .lineage-tree")
            expect(tree).to_be_visible()
            root = tree.locator("> li[data-model='story@1']")
            expect(root.locator("li[data-model='story@2']")).to_have_count(1)
            expect(root.locator(".node-key").first).to_have_text("val_loss")
            shown = root.locator("li[data-model='story@2'] .node-key").all_text_contents()
            assert shown and set(shown) <= set(api.get("/v1/models/story@2").json()["metrics"]), shown
            child = page.locator("#model-cards article[data-model='story@2']")
            expect(child.locator("dd[data-fact='parent']")).to_have_text("story@1")
            parent = page.locator("#model-cards article[data-model='story@1']")
            expect(parent.locator("dd[data-fact='children']")).to_have_text("story@2")
            assert api.get("/v1/models/story@2").json()["parent"] == "story@1"

            assert not page_errors, page_errors
            context.close()
        finally:
            browser.close()
