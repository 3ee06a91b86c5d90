"""The studio's text ↔ image pages in a real browser (Playwright driving Debian's chromium)
against a real ``genloop serve`` over a workspace whose models were trained by the CLI: the
Images page draws from a sentence (unknown words shown), the Caption page captions an uploaded
image, and History restores both — the sentence, and the very image the caption read."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ..conftest import (  # noqa: TID252
    CHROMIUM,
    require_chromium,
    run_cli,
    serving,
    shot,
    tiny_captioner_recipe_dict,
    tiny_image_recipe_dict,
    tiny_t2i_recipe_dict,
    train_recipes,
)

require_chromium()

from playwright.sync_api import expect, sync_playwright  # noqa: E402

pytestmark = pytest.mark.slow
PROMPT = "a small red circle at the top left"


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, str]:
    """A text-to-image model, a captioner and a class-conditional image model: (home, key)."""
    home = tmp_path / "home"
    # the captioner a little longer than elsewhere, so that it writes letters, not blanks
    train_recipes(tmp_path, home, [tiny_t2i_recipe_dict(), tiny_captioner_recipe_dict(steps=150),
                                   tiny_image_recipe_dict("gan", name="digits", steps=4)])
    r = run_cli(["keys", "create", "studio"], home)
    assert r.returncode == 0, r.stderr
    return home, next(w for w in r.stdout.split() if w.startswith("gl_"))


def test_draw_a_sentence_caption_an_upload_and_restore_both(workspace, tmp_path):
    from genloop.data.shapes import draw_shapes

    home, key = workspace
    photo = tmp_path / "photo.png"
    Image.fromarray(draw_shapes(2, seed=5)[0][1]).save(photo)
    with serving(home) as server, sync_playwright() as p, server.client(key) as api:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            context = browser.new_context(http_credentials={"username": "studio", "password": key},
                                          viewport={"width": 1360, "height": 860})
            page = context.new_page()
            page_errors: list[str] = []
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.goto(server.url + "/#/images")
            expect(page.locator("#server-status")).to_have_attribute("data-state", "ok")

            # 1. A class model shows its classes, not a prompt; a text model the other way round
            expect(page.locator("#image-model option[value='tiny-t2i@1']")).to_have_count(1)
            page.select_option("#image-model", "digits@1")
            expect(page.locator("#image-class-field")).to_be_visible()
            expect(page.locator("#image-prompt-field")).to_be_hidden()
            page.select_option("#image-model", "tiny-t2i@1")
            expect(page.locator("#image-prompt-field")).to_be_visible()
            expect(page.locator("#image-class-field")).to_be_hidden()
            # a captioner is no image model, nor a text model to complete with
            assert page.locator("#image-model option[value='tiny-cap@1']").count() == 0
            assert page.locator("#text-model option[value='tiny-cap@1']").count() == 0

            # 2. A sentence with a word the model never saw: a grid, the word named
            page.fill("#image-prompt", PROMPT + " xyzzy")
            page.fill("#image-n", "3")
            page.fill("#image-steps", "3")
            page.uncheck("#image-seed-random")
            page.fill("#image-seed", "21")
            page.click("#image-generate")
            expect(page.locator("#image-grid .tile")).to_have_count(3, timeout=30_000)
            expect(page.locator("#image-grid .unknown-words")).to_contain_text("xyzzy")
            expect(page.locator("#image-grid .grid-prompt")).to_contain_text(PROMPT)
            drawn = page.locator("#image-grid .tile").first.get_attribute("data-generation-id")
            assert api.get(f"/v1/generations/{drawn}").json()["request"]["prompt"] == PROMPT + " xyzzy"
            # an empty sentence is refused on the page, before any request
            page.fill("#image-prompt", "")
            page.click("#image-generate")
            expect(page.locator("#messages .msg-error")).to_contain_text("Prompt")
            page.locator("#messages .msg-error .msg-close").click()
            shot(page, "text-to-image")

            # 3. Caption: upload a picture, see it, get its caption, recorded with the image
            page.click("a[data-route='caption']")
            expect(page.locator("#caption-model option[value='tiny-cap@1']")).to_have_count(1)
            page.set_input_files("#caption-file", str(photo))
            expect(page.locator("#caption-preview")).to_be_visible()
            page.fill("#caption-beams", "2")
            page.uncheck("#caption-seed-random")
            page.fill("#caption-seed", "8")
            page.click("#caption-generate")
            item = page.locator("#caption-output li")
            expect(item).to_have_count(1, timeout=30_000)
            caption = item.locator(".caption-text").text_content() or ""
            assert caption.strip()
            gid = item.get_attribute("data-generation-id")
            record = api.get(f"/v1/generations/{gid}").json()
            assert record["output"] == caption and record["request"]["num_beams"] == 2
            read = api.get(f"/v1/generations/{gid}/input").content
            sent = np.asarray(Image.open(photo))
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(read))), sent)
            item.locator("button[data-rating='5']").click()
            expect(item.locator(".confirm")).to_contain_text("5")
            shot(page, "caption")

            # 4. History: the caption's row shows the image it read; Restore brings back the
            # model, the settings and the image itself
            page.fill("#caption-beams", "1")
            page.fill("#caption-seed", "99")
            page.evaluate("document.querySelector('#caption-preview').removeAttribute('src')")
            page.click("a[data-route='history']")
            row = page.locator(f"#history-rows tr[data-id='{gid}']")
            expect(row.locator("img.caption-thumb[src^='blob:']")).to_have_count(1)
            expect(row).to_contain_text(caption.strip())
            row.locator("button.restore").click()
            expect(page.locator("#page-caption")).to_be_visible()
            assert page.input_value("#caption-model") == "tiny-cap@1"
            assert page.input_value("#caption-beams") == "2"
            assert page.input_value("#caption-seed") == "8"
            expect(page.locator("#caption-preview")).to_have_attribute(
                "src", re.compile(r"^data:image/png;base64,"))
            # captioning the restored image again gives the same caption (beam search: the same)
            page.click("#caption-generate")
            expect(page.locator("#caption-output li .caption-text")).to_have_text(caption,
                                                                                  timeout=30_000)

            # 5. Restore of a drawn image brings back its sentence
            page.click("a[data-route='history']")
            page.locator(f"#history-rows tr[data-id='{drawn}'] button.restore").click()
            expect(page.locator("#page-images")).to_be_visible()
            assert page.input_value("#image-model") == "tiny-t2i@1"
            assert page.input_value("#image-prompt") == PROMPT + " xyzzy"
            expect(page.locator("#image-prompt-field")).to_be_visible()
            assert page.input_value("#image-seed") == "21"  # image 0 of a request seeded 21

            # 6. Models: a captioner's "Use" opens the Caption page with it selected
            page.click("a[data-route='models']")
            page.locator("#model-cards article[data-model='tiny-cap@1'] a.btn").click()
            expect(page.locator("#page-caption")).to_be_visible()
            assert page.input_value("#caption-model") == "tiny-cap@1"

            assert not page_errors, page_errors
            context.close()
        finally:
            browser.close()

