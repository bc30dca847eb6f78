"""The review page in a real browser (Debian's chromium, driven by selenium): a labeller
signs in with a name and the predictor's token, labels five queued predictions with the
keyboard alone (a class's key, Enter for the preselected class, x to skip), takes one back
and labels it again; the samples in S3 carry the labels,
the labeller and the prediction ids, and the progress line counts them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kubeloop.api import samples
from kubeloop.local import services
from kubeloop.storage import ObjectStore
from tests import serving_models
from tests.conftest import ACCESS_KEY, SECRET_KEY
from tests.serving_process import TOKEN, shared_model, start_predictor

pytestmark = pytest.mark.slow

BUCKET = "review-page"
PREFIX = "feedback/digits/"
DATASET = "digits-fb"
SCREENSHOT = "KUBELOOP_REVIEW_SCREENSHOT"
"""Where the test also saves its screenshot, when set (docs/review-page.png was made so)."""


def _browser() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip(
            "no chromium and chromedriver on this machine: `apt-get install chromium "
            "chromium-driver` (Debian) runs the review page's browser test"
        )
    return chromium, driver


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = _browser()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,800"):
        options.add_argument(flag)
    session = webdriver.Chrome(options=options, service=Service(driver))
    session.set_page_load_timeout(30)
    yield session
    session.quit()


def test_a_labeller_labels_five_predictions_with_the_keyboard(
    browser: object,
    tmp_path: Path,
    mlflow_server: services.Service,
    s3_server: services.Service,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait

    assert isinstance(browser, WebDriver)
    store = ObjectStore(s3_server.url, ACCESS_KEY, SECRET_KEY, retries=1)
    store.ensure_bucket(BUCKET)
    model = shared_model(mlflow_server.url)
    process = start_predictor(
        tmp_path / "predictor",
        f"models:/{model.name}@champion",
        mlflow_server.url,
        s3_server.url,
        args=[
            "--feedback-dataset", DATASET, "--feedback-bucket", BUCKET,
            "--feedback-prefix", PREFIX, "--classes", ",".join(serving_models.CLASSES),
            "--input-shape", "8,8", "--retrain-threshold", "10",
        ],
        env={"KUBELOOP_FEEDBACK_TOKEN": TOKEN},
    )  # fmt: skip
    try:
        inputs = serving_models.digit_like_inputs(12, seed=3)
        answer = httpx.post(
            f"{process.url}/v1/models/digits:predict",
            json={"instances": [x.tolist() for x in inputs]},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        wait = WebDriverWait(browser, 20)
        browser.get(f"{process.url}/review/{DATASET}")

        def visible(element_id: str) -> bool:
            return browser.find_element(By.ID, element_id).is_displayed()

        wait.until(lambda _: visible("name"))
        browser.find_element(By.ID, "name").send_keys("ada", Keys.ENTER)
        wait.until(lambda _: visible("token"))  # the review API answered 401
        browser.find_element(By.ID, "token").send_keys(TOKEN, Keys.ENTER)

        item = browser.find_element(By.ID, "item")
        body = browser.find_element(By.TAG_NAME, "body")
        labelled: dict[str, str] = {}
        skipped = []
        for key in (Keys.ENTER, "x", "2", "3", "4", "5"):
            wait.until(lambda _: item.is_displayed() and item.get_attribute("data-prediction-id"))
            shown = str(item.get_attribute("data-prediction-id"))
            assert shown not in labelled
            selected = browser.find_element(By.CSS_SELECTOR, "#classes button.selected")
            top = str(selected.get_attribute("data-label"))
            body.send_keys(key)
            wait.until(lambda _, s=shown: item.get_attribute("data-prediction-id") != s)
            if key == "x":
                skipped.append(shown)
            else:  # Enter accepts the preselected top class
                labelled[shown] = top if key == Keys.ENTER else key
        body.send_keys(Keys.BACKSPACE)  # the fifth label was not sent yet: take it back
        last = next(reversed(labelled))
        wait.until(lambda _: item.get_attribute("data-prediction-id") == last)
        selected = browser.find_element(By.CSS_SELECTOR, "#classes button.selected")
        assert selected.get_attribute("data-label") == "5"
        body.send_keys("7")
        labelled[last] = "7"
        browser.save_screenshot(str(tmp_path / "review-page.png"))

        progress = browser.find_element(By.ID, "progress")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda _: "ada: 5 labelled today" in progress.text)
        assert "new samples toward the retrain: 5 / 10" in progress.text
        assert "live accuracy of version 1" in progress.text
        if os.environ.get(SCREENSHOT):
            browser.save_screenshot(os.environ[SCREENSHOT])
    finally:
        process.stop()

    stored = [
        samples.FeedbackSample.model_validate_json(line)
        for key in store.list_keys(BUCKET, PREFIX + samples.INBOX)
        for line in store.get_bytes(BUCKET, key).splitlines()
    ]
    assert {s.prediction_id: s.label for s in stored} == labelled  # none skipped, no 5
    assert {s.labeller for s in stored} == {"ada"}
    assert all(s.model_version == "1" and s.input for s in stored)
