"""The web page in a real browser (issue 5 "Done when"): headless Chromium driven by Playwright uploads a
bundled sample (granite_asr/assets/samples) to the real server, the transcript appears, and the SRT download parses.

Playwright cannot download its own browser build here, so it drives Debian's `chromium` package
(`apt-get install chromium`, done by .ci/run). Without playwright or a system Chromium the test skips and
says which is missing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import soundfile as sf

import granite_asr

from .test_server import API_KEY, checkpoint, run_server  # noqa: F401 (checkpoint: a fixture)

SAMPLES = Path(granite_asr.__file__).parent / "assets" / "samples"

sync_api = pytest.importorskip("playwright.sync_api")
srt = pytest.importorskip("srt")

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)


@pytest.fixture(scope="module")
def server(checkpoint):  # noqa: F811 (the imported fixture is this module's too)
    with run_server(checkpoint, "--api-key", API_KEY, "--max-wait-ms", "5") as url:
        yield url


@pytest.mark.skipif(CHROMIUM is None, reason="no system chromium (apt-get install chromium)")
def test_upload_transcript_and_srt_download(server, tmp_path):
    audio = SAMPLES / "en.flac"  # a bundled sample, as a user would upload it
    seconds = sf.info(str(audio)).duration
    with sync_api.sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(accept_downloads=True)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server)
            page.wait_for_selector("#api-key", state="visible")  # a 401 from /v1/models opens the key box
            page.fill("#api-key", API_KEY)
            page.locator("#api-key").dispatch_event("change")
            page.wait_for_function("document.getElementById('model').textContent.includes('tiny-asr')")
            page.set_input_files("#file", str(audio))
            page.click("#submit")
            page.wait_for_selector("#transcript .seg", timeout=30_000)
            assert page.locator("#transcript .seg .time").first.inner_text().startswith("0:")
            assert page.locator("#transcript .word").count() >= 1  # word timings are shown
            assert f"{seconds:.1f} s of audio" in page.inner_text("#summary")
            with page.expect_download() as info:
                page.click("#dl-srt")
            download = info.value
            assert download.suggested_filename == "en.srt"
            cues = list(srt.parse(Path(download.path()).read_text(encoding="utf-8")))
            assert cues and cues[0].start.total_seconds() >= 0
            with page.expect_download() as info:
                page.click("#dl-json")
            assert info.value.suggested_filename == "en.json"
            assert errors == []
        finally:
            browser.close()
