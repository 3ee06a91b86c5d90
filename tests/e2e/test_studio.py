"""The studio in a real browser (Playwright driving Debian's chromium) against a real
`genloop serve` over a workspace whose models were trained through the CLI: text streamed
(completion and chat) and stopped, a rating that reaches the store, an image grid and its
download, an output withheld by the moderation policy and why, an API error shown and
dismissed, History's Restore filling every field (a 63-bit
seed included), an A/B preference, the Models page, a prompt that is HTML staying text, and
the warning banner when auth is off.

GENLOOP_SCREENSHOTS=1 trains a little longer (so the pictures show words and digits) and writes
docs/img/studio-*.png; a normal run writes nothing outside its temporary directory.
"""

from __future__ import annotations

import os
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
    tiny_image_recipe_dict,
    tiny_recipe_dict,
    write_corpus,
)

XSS = '<img src=x onerror=__xss=1>'  # short: the tiny model's context is 32 tokens

require_chromium()

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def workspace_with_models(tmp_path: Path) -> tuple[Path, str]:
    """A workspace with a text model `story` and an image model `digits`, both trained by the
    CLI, and an API key: (home, key)."""
    home = tmp_path / "home"
    corpus = write_corpus(tmp_path / "corpus.txt", size=60_000 if SCREENSHOTS else 30_000)
    text = tiny_recipe_dict(corpus, name="story", steps=1500 if SCREENSHOTS else 30)
    image = tiny_image_recipe_dict("diffusion", name="digits", steps=20)
    if SCREENSHOTS and (Path(os.environ.get("GENLOOP_DATA_MIRROR", "/nonexistent")) / "mnist").is_dir():
        image = tiny_image_recipe_dict("vae", name="digits", steps=800, source="mnist", batch_size=32)
    image["eval"].update(num_samples=16, batch_size=16, extractor_steps=5, nll_images=4)
    for name, recipe in (("story.yaml", text), ("digits.yaml", image)):
        (tmp_path / name).write_text(yaml.safe_dump(recipe))
        r = run_cli(["train", str(tmp_path / name)], home, timeout=600)
        assert r.returncode == 0, r.stderr
    r = run_cli(["keys", "create", "studio"], home)
    assert r.returncode == 0, r.stderr
    return home, r.stdout.strip()


# Records, in the page, whether the output area held generated text while the stream was
# still open: a MutationObserver callback runs between two events of the stream.
WATCH_STREAM = """() => {
  window.__seenWhileStreaming = 0;
  const out = document.querySelector('#text-output');
  new MutationObserver(() => {
    const gen = out.querySelector('.generated');
    if (out.dataset.state === 'streaming' && gen && gen.textContent.length > 0) window.__seenWhileStreaming++;
  }).observe(out, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


# Presses Stop the moment the first generated text is on the page, as a quick user would.
STOP_ON_FIRST_TEXT = """() => {
  const out = document.querySelector('#text-output');
  const observer = new MutationObserver(() => {
    const gen = out.querySelector('.generated');
    if (gen && gen.textContent.length > 0) {
      observer.disconnect();
      document.querySelector('#text-stop').click();
    }
  });
  observer.observe(out, {subtree: true, childList: true, characterData: true});
}"""


def generate_text(page: Page, prompt: str, *, seed: int, temperature: str, max_tokens: str) -> str:
    page.fill("#text-prompt", prompt)
    page.fill("#text-temperature", temperature)
    page.fill("#text-max-tokens", max_tokens)
    page.uncheck("#text-seed-random")
    page.fill("#text-seed", str(seed))
    page.click("#text-generate")
    gid = page.locator("#text-result .generation-id")
    expect(gid).to_be_visible(timeout=30_000)
    return gid.get_attribute("data-generation-id") or ""


def test_studio_in_a_browser(workspace_with_models: tuple[Path, str]) -> None:
    home, key = workspace_with_models
    with serving(home) as server, sync_playwright() as p, server.client(key) as api:
        url = server.url
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            context = browser.new_context(http_credentials={"username": "studio", "password": key},
                                          viewport={"width": 1360, "height": 860}, color_scheme="light")
            page = context.new_page()
            page_errors: list[str] = []
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.goto(url + "/")
            expect(page.locator("#server-status")).to_have_attribute("data-state", "ok")
            expect(page.locator("#auth-banner")).to_be_hidden()  # auth is on

            # 1. Text, streamed: text shows while the stream is open; the result bar at its end
            expect(page.locator("#text-model option[value='story@1']")).to_have_count(1)
            page.evaluate(WATCH_STREAM)
            first = generate_text(page, "The cat", seed=1234, temperature="0.7", max_tokens="200")
            assert page.evaluate("window.__seenWhileStreaming") > 0
            generated = page.locator("#text-output .generated").text_content() or ""
            assert generated.strip()
            assert page.locator("#text-output .prompt-echo").text_content() == "The cat"

            # 2. Four stars: confirmed on the page and stored
            page.click("#text-result button[data-rating='4']")
            expect(page.locator("#text-result .confirm")).to_contain_text("4")
            record = api.get(f"/v1/generations/{first}").json()
            assert [(f["kind"], f["value"]) for f in record["feedback"]] == [("rating", 4)]
            assert record["seed"] == 1234 and record["output"] == generated
            shot(page, "text")

            # 3. A prompt that is HTML stays text: shown literally, no element made, nothing run
            second = generate_text(page, XSS, seed=7, temperature="1", max_tokens="8")
            assert page.locator("#text-output .prompt-echo").text_content() == XSS
            assert page.evaluate("document.querySelectorAll('img[src=\"x\"]').length") == 0

            # A policy blocking a piece of what the model writes: the output is withheld, and
            # the studio says why (the record's reason), showing none of it; History says so too
            import re

            piece = generated.strip()[:6].casefold()
            (home / "moderation.yaml").write_text(yaml.safe_dump({"patterns": [
                {"category": "studio", "pattern": re.escape(piece), "action": "block"}]}))
            withheld = generate_text(page, "The cat", seed=1234, temperature="0.7", max_tokens="200")
            note = page.locator("#text-result .withheld")
            expect(note).to_contain_text("Output withheld by the moderation policy — blocked: "
                                         "studio (pattern)")
            expect(page.locator("#text-result .pill").first).to_have_text("withheld")
            assert piece not in (page.locator("#text-output").text_content() or "").casefold()
            assert api.get(f"/v1/generations/{withheld}").json()["safety"]["withheld"] is True
            page.click("a[data-route='history']")
            expect(page.locator(f"#history-rows tr[data-id='{withheld}']")).to_contain_text(
                "Output withheld by the moderation policy")
            (home / "moderation.yaml").unlink()
            page.click("a[data-route='text']")

            # Chat with a random seed: messages in, the reply streamed as deltas, recorded with both
            page.click(".segmented label:has(input[value=chat])")
            page.fill("#chat-messages .chat-content", "Hi")
            page.check("#text-seed-random")
            page.click("#text-generate")
            expect(page.locator("#text-result .generation-id")).to_be_visible(timeout=30_000)
            chat = page.locator("#text-result .generation-id").get_attribute("data-generation-id") or ""
            chat_record = api.get(f"/v1/generations/{chat}").json()
            assert chat_record["request"]["messages"] == [{"role": "user", "content": "Hi"}]
            assert page.locator("#text-output .prompt-echo").count() == 0

            # Stop as soon as the first text arrives: the stream is cut, no result is offered
            page.click(".segmented label:has(input[value=completion])")
            page.fill("#text-prompt", "A dog")
            page.fill("#text-max-tokens", "2000")
            page.evaluate(STOP_ON_FIRST_TEXT)
            page.click("#text-generate")
            expect(page.locator("#text-status")).to_contain_text("Stopped")
            expect(page.locator("#text-generate")).to_be_enabled()
            expect(page.locator("#text-result")).to_be_hidden()

            # 4. Images: a grid of 4, each with its download link and rating buttons
            page.click("a[data-route='images']")
            page.select_option("#image-model", "digits@1")
            page.select_option("#image-class", "3")
            page.fill("#image-n", "4")
            page.fill("#image-steps", "5000")  # over the server's limit: its message is shown
            page.click("#image-generate")
            error = page.locator("#messages .msg-error")
            expect(error).to_contain_text("steps")
            error.locator(".msg-close").click()
            expect(error).to_have_count(0)
            page.fill("#image-steps", "8" if not SCREENSHOTS else "40")
            page.uncheck("#image-seed-random")
            page.fill("#image-seed", "5")
            page.click("#image-generate")
            tiles = page.locator("#image-grid .tile")
            expect(tiles).to_have_count(4, timeout=30_000)
            expect(page.locator("#image-grid img")).to_have_count(4)
            assert page.evaluate("[...document.querySelectorAll('#image-grid img')].every(i => i.width)")
            assert page.locator("#image-grid .tile a[download]").count() == 4
            with page.expect_download() as download:
                tiles.first.locator("a[download]").click()
            assert download.value.path().read_bytes().startswith(b"\x89PNG")
            shot(page, "images")

            # 5. History: every generation listed; HTML in it is text; Restore refills the form
            page.click("a[data-route='history']")
            rows = page.locator("#history-rows tr")
            expect(rows).to_have_count(len(api.get("/v1/generations").json()["data"]))

            def row(gid: str) -> str:
                return f"#history-rows tr[data-id='{gid}']"

            expect(page.locator(f"{row(second)} .preview-text")).to_contain_text(XSS)
            thumbs = page.locator("#history-rows tr[data-kind='image'] img.thumb-img[src^='blob:']")
            expect(thumbs).to_have_count(4)
            assert page.evaluate("document.querySelectorAll('img[src=\"x\"]').length") == 0

            # A/B: tick the two texts, prefer the first
            page.check(f"{row(first)} input[type=checkbox]")
            page.check(f"{row(second)} input[type=checkbox]")
            expect(page.locator(f"{row(second)} .ab-tag")).to_have_text("B")
            shot(page, "history")
            page.click("#prefer-a")
            expect(page.locator(f"{row(first)} .c-feedback")).to_contain_text("preferred")
            feedback = api.get(f"/v1/generations/{first}").json()["feedback"]
            prefs = [f for f in feedback if f["kind"] == "preference"]
            assert [(f["generation_id"], f["other_generation_id"]) for f in prefs] == [(first, second)]

            # the form still holds the second generation's settings; Restore brings the first's
            page.click(f"{row(first)} button.restore")
            expect(page.locator("#page-text")).to_be_visible()
            expect(page.locator("#text-prompt")).to_be_visible()  # back from chat to completion
            assert page.input_value("#text-prompt") == "The cat"
            assert page.input_value("#text-seed") == "1234" and not page.is_checked("#text-seed-random")
            assert page.input_value("#text-temperature") == "0.7"
            assert page.input_value("#text-max-tokens") == "200"
            assert page.input_value("#text-model") == "story@1"

            # a random seed (63 bits: more than a JS number holds) comes back digit for digit
            page.click("a[data-route='history']")
            page.click(f"{row(chat)} button.restore")
            expect(page.locator("#chat-messages .chat-content")).to_have_value("Hi")
            assert page.input_value("#text-seed") == str(chat_record["seed"])

            # Restore of an image brings back its model, class, n, steps and seed
            page.click("a[data-route='history']")
            page.locator("#history-rows tr[data-kind='image'] button.restore").first.click()
            expect(page.locator("#page-images")).to_be_visible()
            # an image's record is the request of one that draws it again: its class, its seed
            # (image i of a request seeded 5 is seeded 5 + i)
            assert page.input_value("#image-class") == "3" and page.input_value("#image-n") == "1"
            assert page.input_value("#image-seed") in {"5", "6", "7", "8"}
            assert page.input_value("#image-model") == "digits@1"

            # 6. Models: both, with metrics and their card as text
            page.click("a[data-route='models']")
            cards = page.locator("#model-cards article.model")
            expect(cards).to_have_count(len(api.get("/v1/models").json()["data"]))
            story = page.locator("#model-cards article[data-model='story@1']")
            expect(story.locator("table.metrics")).to_contain_text("val_loss")
            expect(story.locator("pre.model-card-text")).to_contain_text("story")
            shot(page, "models")
            if SCREENSHOTS:
                page.emulate_media(color_scheme="dark")
                page.click("a[data-route='images']")
                shot(page, "images-dark")

            assert page.evaluate("window.__xss") is None
            assert not page_errors, page_errors
            context.close()

            # With auth off (loopback only), the studio says so on every page, no key asked
            with serving(home, "--no-auth") as open_server:
                page = browser.new_page()
                page.goto(open_server.url + "/#/models")
                expect(page.locator("#auth-banner")).to_be_visible()
                expect(page.locator("#auth-banner")).to_contain_text("Authentication is off")
                expect(page.locator("#model-cards article.model").first).to_be_visible()
        finally:
            browser.close()
