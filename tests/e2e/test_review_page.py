"""The review page in a real browser (Debian's chromium, driven by selenium): a labeller
signs in with a name and the predictor's token, labels five queued predictions with the
keyboard alone (a class's key, Enter for the preselected class, x to skip), takes one back
and labels it again; the samples in S3 carry the labels,
the labeller and the prediction ids, and the progress line counts them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from kubeloop.api import samples
from kubeloop.local import services
from kubeloop.storage import ObjectStore
from tests import serving_models
from tests.conftest import ACCESS_KEY, SECRET_KEY
from tests.serving_process import TOKEN, start_reviewing_predictor

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
    process = start_reviewing_predictor(
        tmp_path / "predictor",
        mlflow_server.url,
        s3_server.url,
        BUCKET,
        ["--retrain-threshold", "10"],
        env={"KUBELOOP_FEEDBACK_TOKEN": TOKEN},
        dataset=DATASET,
        prefix=PREFIX,
    )
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


def _label_with_keys(browser: Any, wait: Any, answers: dict[str, str], count: int) -> list[str]:
    """Label `count` items shown on the page with their key; the prediction ids labelled."""
    from selenium.webdriver.common.by import By

    item = browser.find_element(By.ID, "item")
    body = browser.find_element(By.TAG_NAME, "body")
    done: list[str] = []
    for _ in range(count):
        wait.until(lambda _: item.is_displayed() and item.get_attribute("data-prediction-id"))
        shown = str(item.get_attribute("data-prediction-id"))
        assert shown not in done
        body.send_keys(answers[shown])
        done.append(shown)
        if len(done) < count:
            wait.until(lambda _, s=shown: item.get_attribute("data-prediction-id") != s)
    return done


def _sign_in(browser: Any, wait: Any, url: str, name: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(url)
    wait.until(lambda _: browser.find_element(By.ID, "name").is_displayed())
    browser.find_element(By.ID, "name").send_keys(name, Keys.ENTER)


def test_the_demos_new_user_is_labelled_on_the_page_and_triggers_the_retrain(
    browser: object, tmp_path: Path
) -> None:
    """`kubeloop demo --quick --review`: the demo predicts the new user's images and waits;
    a person labels all of them on the review page with the keyboard alone (the demo prints
    the page's URL), which triggers the retrain, and the new version passes the gate."""
    from selenium.webdriver.support.ui import WebDriverWait

    from kubeloop import digits

    kubeloop = Path(sys.executable).with_name("kubeloop")
    log = tmp_path / "demo.log"
    with log.open("w") as err:
        demo = subprocess.Popen(
            [str(kubeloop), "demo", "--quick", "--review", "--json"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        )
    try:
        url = _wait_for_page(demo, log)
        images, labels = digits.new_user_feedback(THRESHOLD, 1)  # what the demo predicted
        base = url.split("/review/")[0]
        queued = httpx.get(f"{base}/v1/review/digits-feedback?budget=1000", timeout=30).json()
        answers = {}
        for item in queued["items"]:
            shown = np.asarray(item["input"], np.float32).reshape(-1)
            nearest = int(np.abs(images.reshape(len(images), -1) - shown).sum(axis=1).argmin())
            answers[item["prediction_id"]] = str(labels[nearest])
        assert len(answers) == THRESHOLD
        wait = WebDriverWait(browser, 30)
        _sign_in(browser, wait, url, "ada")
        _label_with_keys(browser, wait, answers, THRESHOLD)
        out, _ = demo.communicate(timeout=900)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 0, log.read_text()[-4000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["retrain_triggers"] == 1
    assert summary["gate"]["verdict"] == "Passed", summary
    assert summary["gate"]["slice_deltas"]["new-user"] > 0.2, summary
    assert summary["feedback_samples"] == THRESHOLD
    assert summary["versions"][1]["trainingJob"] == "digits-feedback-gen-1"


THRESHOLD = 100
"""examples/digits' retrain threshold: the labels the page must give."""


def _wait_for_page(demo: subprocess.Popen[str], log: Path) -> str:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        found = re.search(r"Label them at\s+(http\S+)", log.read_text())
        if found:
            return found[1]
        assert demo.poll() is None, log.read_text()[-4000:]
        time.sleep(0.5)
    raise AssertionError("the demo never printed its review page:\n" + log.read_text()[-4000:])


def test_an_adjudicator_settles_a_dispute_on_the_page(
    browser: object,
    tmp_path: Path,
    mlflow_server: services.Service,
    s3_server: services.Service,
) -> None:
    """Two labellers disagree on an item (review overlap 2); the page links to the
    adjudication view, which shows their votes, and a key settles the item."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    assert isinstance(browser, WebDriver)
    store = ObjectStore(s3_server.url, ACCESS_KEY, SECRET_KEY, retries=1)
    store.ensure_bucket(ADJUDICATED)
    process = start_reviewing_predictor(
        tmp_path / "predictor",
        mlflow_server.url,
        s3_server.url,
        ADJUDICATED,
        ["--review-overlap", "2"],
        dataset=DATASET,
        prefix=PREFIX,
    )
    try:
        inputs = serving_models.digit_like_inputs(3, seed=4)
        predicted = httpx.post(
            f"{process.url}/v1/models/digits:predict",
            json={"instances": [x.tolist() for x in inputs]},
            timeout=30,
        ).json()["predictions"][0]
        for who, label in (("ada", "3"), ("bob", "8")):
            sent = httpx.post(
                f"{process.url}/v1/feedback/{DATASET}",
                json={"prediction_id": predicted["prediction_id"], "label": label, "labeller": who},
                timeout=30,
            )
            assert sent.status_code == 201, sent.text
        wait = WebDriverWait(browser, 30)
        _sign_in(browser, wait, f"{process.url}/review/{DATASET}", "cy")
        link = browser.find_element(By.ID, "mode-link")
        wait.until(lambda _: link.is_displayed() and "1 disputed" in link.text)
        link.click()
        votes = browser.find_element(By.ID, "votes")
        wait.until(lambda _: votes.is_displayed() and "ada said 3" in votes.text)
        assert "bob said 8" in votes.text
        _label_with_keys(browser, wait, {predicted["prediction_id"]: "8"}, 1)

        def settled(_: object) -> bool:
            return bool(store.list_keys(ADJUDICATED, PREFIX + samples.INBOX))

        wait.until(settled)  # sent when the undo window ends
    finally:
        process.stop()
    (sample,) = [
        samples.FeedbackSample.model_validate_json(line)
        for key in store.list_keys(ADJUDICATED, PREFIX + samples.INBOX)
        for line in store.get_bytes(ADJUDICATED, key).splitlines()
    ]
    assert (sample.id, sample.label, sample.labeller) == (predicted["prediction_id"], "8", "cy")
    assert sample.agreed_by == ["bob"]


ADJUDICATED = "review-adjudicated"
