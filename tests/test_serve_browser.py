"""The /demo page in a real headless Chromium (Selenium + the system chromedriver): upload a clip, ask,
see an answer, the transcript line and the exact prompt. Skipped, with the reason, where no browser is
installed (`make test` installs Debian's chromium + chromium-driver where it can)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[serve]')")

from serve_helpers import running_server, tiny_speechllm  # noqa: E402

from speechllm.serve.app import ServeSettings, create_app  # noqa: E402

CHROME = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROME and DRIVER), reason="no headless browser: install chromium and "
                                "chromium-driver (apt-get install chromium chromium-driver)")


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROME
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--mute-audio"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


def test_demo_page_uploads_a_clip_and_shows_the_answer_transcript_and_prompt(browser, tmp_path):
    import soundfile as sf
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    t = np.arange(24000) / 16000
    clip = tmp_path / "clip.wav"
    sf.write(clip, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    app = create_app(tiny_speechllm(), ServeSettings(model_name="tiny-demo", default_max_tokens=8))
    with running_server(app) as url:
        browser.get(url + "/")  # redirects to /demo
        wait = WebDriverWait(browser, 120)
        wait.until(lambda d: d.find_element(By.ID, "model").text == "tiny-demo")
        browser.find_element(By.ID, "file").send_keys(str(clip))
        wait.until(lambda d: d.find_element(By.ID, "ask").is_enabled() or d.find_element(By.ID, "error").text)
        assert browser.find_element(By.ID, "error").text == ""
        assert "1.5 s" in browser.find_element(By.ID, "audio-status").text
        question = browser.find_element(By.ID, "question")
        question.clear()
        question.send_keys("Is this a pure tone?")
        browser.find_element(By.ID, "ask").click()
        wait.until(lambda d: d.find_element(By.ID, "answer").text or d.find_element(By.ID, "error").text)
        assert browser.find_element(By.ID, "error").text == ""
        assert browser.find_element(By.ID, "answer").text.strip()
        prompt = browser.find_element(By.ID, "prompt").text
        assert "<|audio|>" in prompt and "Is this a pure tone?" in prompt
        assert "tokens" in browser.find_element(By.ID, "meta").text


def test_eval_page_shows_the_task_table_chart_and_examples_with_playable_audio(browser, tmp_path):
    from types import SimpleNamespace

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from serve_helpers import fake_eval_run

    from evaluation.browser.routes import eval_mount
    from evaluation.browser.run import EvalRun

    stub = SimpleNamespace(config=SimpleNamespace(system_prompt=None))  # the eval page never asks the model
    app = create_app(stub, ServeSettings(model_name="tiny"), [eval_mount(EvalRun(fake_eval_run(tmp_path)))])
    with running_server(app) as url:
        browser.get(url + "/demo")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: d.find_element(By.ID, "nav").is_displayed())  # the second page is announced
        browser.find_element(By.LINK_TEXT, "Evaluation run").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#examples tr.example")) == 3
                   or d.find_element(By.ID, "error").text)
        assert browser.find_element(By.ID, "error").text == ""
        assert browser.find_element(By.ID, "run").text == "run"
        assert "66.7" in browser.find_element(By.ID, "table").text  # TaskA likelihood accuracy, in percent
        rows = browser.find_elements(By.CSS_SELECTOR, "#examples tr.example")
        assert "answer 1" in rows[1].text and "shuffled 1" in rows[1].text and "female" in rows[1].text
        audio = rows[0].find_element(By.TAG_NAME, "audio")
        browser.execute_script("arguments[0].load()", audio)
        wait.until(lambda d: d.execute_script("return arguments[0].readyState >= 1 || arguments[0].error", audio))
        assert browser.execute_script("return arguments[0].error", audio) is None
        assert browser.execute_script("return arguments[0].duration", audio) == pytest.approx(0.5, abs=0.05)
