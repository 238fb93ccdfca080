"""The reader-study page in a real browser: the system's headless Chromium, driven by Selenium.

Answers every item by clicking and by keys, reloads half-way, downloads the CSV and scores it, and checks that
the page asked for nothing but itself and its inlined images; two tabs of one reader merge item by item,
readers on one computer stay apart, and a browser that keeps nothing is named at the start. Set ``BIOAUG_STUDY_SCREENSHOT=PATH`` to also
save a screenshot of the page there (``docs/images/study-page.png`` comes from this).
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bioaug.study import StudyConfig, make, read_key, score
from conftest import make_disc_store

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
LOCAL_SCHEMES = ("file:", "data:", "blob:")  # none of these leaves the machine
READER = 'Dr Ada, "MD"'  # a comma and quotes: the page's CSV must quote them

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
pytestmark = pytest.mark.skipif(not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
                                reason="no system Chromium (apt-get install chromium chromium-driver; .ci/run does)")


@pytest.fixture
def browser(tmp_path, monkeypatch):
    """Headless Chromium with a fresh profile, downloads into ``tmp_path/downloads``, performance log on."""
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not fetch a driver or browser
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--force-device-scale-factor=1", "--window-size=900,820",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        driver.get("about:blank")
        driver.get_log("performance")  # drop what the browser's own start-up page asked for
        yield driver, downloads
    finally:
        driver.quit()


def requested_urls(driver) -> list[str]:
    messages = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
    urls = [m["params"]["request"]["url"] for m in messages if m["method"] == "Network.requestWillBeSent"]
    urls += [m["params"]["url"] for m in messages if m["method"] == "Network.webSocketCreated"]
    return urls


def shown_item(driver) -> str:
    return driver.find_element("id", "patch").get_attribute("data-item")


def pressed(driver, element_id: str) -> bool:
    return driver.find_element("id", element_id).get_attribute("aria-pressed") == "true"


def wait_for_download(folder: Path, timeout: float = 20) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [p for p in folder.iterdir() if p.suffix == ".csv"]
        if done:
            return done[0]
        time.sleep(0.1)
    raise AssertionError(f"no CSV downloaded into {folder} within {timeout} s: {list(folder.iterdir())}")


def test_reader_answers_reloads_downloads_and_is_scored(browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    driver, downloads = browser
    real = make_disc_store(tmp_path / "real", per_class=8, slides=2, seed=0)
    synthetic = make_disc_store(tmp_path / "synthetic", per_class=8, slides=2, seed=1, kind="synthetic")
    page = make(real, synthetic, tmp_path / "study", StudyConfig(n=12, per_class=True, show_class=True, seed=2))
    key = read_key(tmp_path / "study")
    truth = {item["id"]: item["source"] for item in key["items"]}
    stores = {"real": real, "synthetic": synthetic}
    flip = {"real": "synthetic", "synthetic": "real"}
    wrong_at = {1, 8}  # the reader errs on these positions; everything else is right
    given: dict[str, tuple[str, int]] = {}

    driver.get(page.as_uri())
    assert driver.find_element("id", "intro").is_displayed()
    assert not driver.find_element("id", "start").is_enabled()
    driver.find_element("id", "reader").send_keys(READER)
    driver.find_element("id", "start").click()

    # pixels are honest: the patch is drawn at zoom x its size, unsmoothed, exactly the store's pixels
    image = driver.find_element("id", "patch")
    assert driver.execute_script("return [arguments[0].width, arguments[0].clientWidth]", image) == [32 * 4] * 2
    assert driver.execute_script("return getComputedStyle(arguments[0]).imageRendering", image) == "pixelated"
    shot = np.asarray(Image.open(io.BytesIO(image.screenshot_as_png)).convert("RGB"))[1:-1, 1:-1]  # inside the border
    item = next(i for i in key["items"] if i["id"] == shown_item(driver))
    expected = stores[item["source"]].image(item["store_index"]).repeat(4, axis=0).repeat(4, axis=1)
    assert shot.shape == expected.shape
    assert np.abs(shot.astype(int) - expected).max() <= 2  # colour management may round; no smoothing

    # first half by clicking
    for position in range(6):
        item_id = shown_item(driver)
        answer = flip[truth[item_id]] if position in wrong_at else truth[item_id]
        confidence = position % 3 + 1
        driver.find_element("id", f"answer-{answer}").click()
        assert driver.find_element("id", "position").text == f"Item {position + 1} of 12"  # waits for confidence
        driver.find_element("id", f"confidence-{confidence}").click()
        given[item_id] = (answer, confidence)
    assert driver.find_element("id", "position").text == "Item 7 of 12"

    # the reader's answers are kept in localStorage and in the address's fragment, alike
    stored, fragment = driver.execute_script("return [stored(reader.reader), fromFragment()]")
    assert stored["answers"] == fragment["answers"] and len(stored["answers"]) == 6
    assert fragment["index"] == 6 and fragment["reader"] == READER

    # a reload resumes where the reader was, even when the browser hands the reloaded page an empty
    # localStorage (headless Chromium does so now and then for file: pages; here it is forced)
    driver.execute_script("window.localStorage.clear()")
    driver.refresh()
    assert driver.find_element("id", "question").is_displayed()
    assert driver.find_element("id", "position").text == "Item 7 of 12"
    assert driver.find_element("id", "answered").text == "6 answered"
    assert len(driver.execute_script("return stored(reader.reader).answers")) == 6  # both copies written again
    keys = ActionChains(driver)
    keys.send_keys("\ue012").perform()  # arrow left: back to the last answered item, its answer still there
    back_id = shown_item(driver)
    assert pressed(driver, f"answer-{given[back_id][0]}") and pressed(driver, f"confidence-{given[back_id][1]}")
    keys.send_keys("\ue014").perform()  # arrow right
    assert driver.find_element("id", "position").text == "Item 7 of 12"
    screenshot = tmp_path / "study-page.png"
    driver.save_screenshot(str(screenshot))

    # second half by keys
    for position in range(6, 12):
        item_id = shown_item(driver)
        answer = flip[truth[item_id]] if position in wrong_at else truth[item_id]
        confidence = position % 3 + 1
        ActionChains(driver).send_keys(answer[0]).perform()
        assert pressed(driver, f"answer-{answer}")
        ActionChains(driver).send_keys(str(confidence)).perform()
        given[item_id] = (answer, confidence)

    assert driver.find_element("id", "done").is_displayed()
    assert driver.find_element("id", "done-text").text == f"All 12 items answered. Thank you, {READER}."
    driver.find_element("id", "download").click()
    downloaded = wait_for_download(downloads)
    assert downloaded.name == f"study-{key['study_id']}-Dr_Ada_MD_.csv"
    with open(downloaded, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12
    assert {row["study_id"] for row in rows} == {key["study_id"]} and {row["reader"] for row in rows} == {READER}
    assert {row["item_id"]: (row["answer"], int(row["confidence"])) for row in rows} == given
    seconds = [float(row["seconds"]) for row in rows]
    assert min(seconds) >= 0 and sum(seconds) > 0

    result = score(tmp_path / "study", [downloaded], tmp_path / "scores")
    scores = result["readers"][READER]
    assert scores["answered"] == 12 and scores["accuracy"]["k"] == 12 - len(wrong_at)

    urls = requested_urls(driver)
    assert page.as_uri() in urls
    assert [url for url in urls if not url.startswith(LOCAL_SCHEMES)] == []

    Image.open(screenshot).verify()
    target = os.environ.get("BIOAUG_STUDY_SCREENSHOT")
    if target:
        shutil.copyfile(screenshot, target)


def test_the_network_check_sees_a_request_the_page_should_not_make(browser, tmp_path):
    """The request log above is not blind: a page with one remote image is caught (the request is logged even
    though the page's content security policy then blocks it)."""
    driver, _ = browser
    real = make_disc_store(tmp_path / "real", per_class=4, slides=1, seed=0)
    synthetic = make_disc_store(tmp_path / "synthetic", per_class=4, slides=1, seed=1, kind="synthetic")
    page = make(real, synthetic, tmp_path / "study", StudyConfig(n=4))
    leaky = tmp_path / "leaky.html"
    leaky.write_text(page.read_text().replace("</main>", '<img src="http://127.0.0.1:9/x.png"></main>'))
    driver.get(leaky.as_uri())
    assert [url for url in requested_urls(driver) if not url.startswith(LOCAL_SCHEMES)] == [
        "http://127.0.0.1:9/x.png"]


def test_without_confidence_one_key_answers_an_item(browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    driver, downloads = browser
    real = make_disc_store(tmp_path / "real", per_class=4, slides=1, seed=0)
    synthetic = make_disc_store(tmp_path / "synthetic", per_class=4, slides=1, seed=1, kind="synthetic")
    page = make(real, synthetic, tmp_path / "study", StudyConfig(n=4, confidence=False, seed=1))
    driver.get(page.as_uri())
    assert not driver.find_element("id", "confidence-row").is_displayed()
    driver.find_element("id", "reader").send_keys("B")
    driver.find_element("id", "start").click()
    for position in range(4):
        assert driver.find_element("id", "position").text == f"Item {position + 1} of 4"
        ActionChains(driver).send_keys("r").perform()
    assert driver.find_element("id", "done").is_displayed()
    driver.find_element("id", "download").click()
    with open(wait_for_download(downloads), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["answer"], row["confidence"]) for row in rows] == [("real", "")] * 4
    result = score(tmp_path / "study", [next(downloads.glob("*.csv"))], tmp_path)
    assert result["readers"]["B"]["accuracy"]["value"] == 0.5
    assert result["readers"]["B"]["sensitivity"]["value"] == 0.0
    assert list(result["readers"]["B"]["by_confidence"]) == ["none"]


def small_study(tmp_path: Path, **options) -> tuple[Path, dict]:
    """A 12-item study over small disc stores: its page and key."""
    real = make_disc_store(tmp_path / "real", per_class=8, slides=2, seed=0)
    synthetic = make_disc_store(tmp_path / "synthetic", per_class=8, slides=2, seed=1, kind="synthetic")
    page = make(real, synthetic, tmp_path / "study", StudyConfig(**{"n": 12, "seed": 4, **options}))
    return page, read_key(tmp_path / "study")


def press(driver, *keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    for key in keys:
        ActionChains(driver).send_keys(key).perform()


def start_new_reader(driver, name: str) -> None:
    driver.find_element("id", "reader").send_keys(name)
    driver.find_element("id", "start").click()


def resume_buttons(driver) -> list:
    return driver.find_elements("css selector", "#reader-list button")


def resume(driver, name: str) -> None:
    next(button for button in resume_buttons(driver) if button.text.startswith(name + " (")).click()


def downloaded_rows(driver, downloads: Path) -> list[dict[str, str]]:
    """Download the answers so far, read the CSV, and empty the downloads folder again."""
    button = "download-now" if driver.find_element("id", "question").is_displayed() else "download"
    driver.find_element("id", button).click()
    path = wait_for_download(downloads)
    time.sleep(0.2)  # let Chromium finish renaming the file
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    path.unlink()
    return rows


def test_two_tabs_merge_per_item_and_warn(browser, tmp_path):
    """An older tab never overwrites newer answers: copies merge item by item, and each tab says another is open."""
    driver, downloads = browser
    page, key = small_study(tmp_path)
    truth = {item["id"]: item["source"] for item in key["items"]}
    driver.get(page.as_uri())
    start_new_reader(driver, "Dr A")
    first = driver.current_window_handle
    for _ in range(2):
        press(driver, truth[shown_item(driver)][0], "2")
    assert not driver.find_element("id", "other-tab").is_displayed()

    driver.switch_to.new_window("tab")  # an older tab: opened at 2 answers
    driver.get(page.as_uri())
    second = driver.current_window_handle
    assert driver.find_element("id", "other-tab").is_displayed()
    resume(driver, "Dr A")
    assert driver.find_element("id", "position").text == "Item 3 of 12"

    driver.switch_to.window(first)
    assert driver.find_element("id", "other-tab").is_displayed()
    answers_of_first = {}
    for _ in range(4):
        item_id = shown_item(driver)
        answers_of_first[item_id] = truth[item_id]
        press(driver, truth[item_id][0], "3")
    assert driver.find_element("id", "answered").text == "6 answered"
    driver.close()

    driver.switch_to.window(second)
    assert not driver.find_element("id", "other-tab").is_displayed()  # the other tab said goodbye
    assert driver.find_element("id", "answered").text == "6 answered"  # it took in the other tab's answers
    # as the issue found it: a tab that missed the other's saves (frozen in the background, say) still holds
    # its copy from 2 answers; answering an item takes in the stored answers first instead of dropping them
    driver.execute_script("reader = merge(emptyRecord(reader.reader), fromFragment()); render()")
    assert driver.find_element("id", "answered").text == "2 answered"
    third = shown_item(driver)  # answered by the first tab; this later answer wins
    flip = {"real": "synthetic", "synthetic": "real"}
    press(driver, flip[truth[third]][0], "1")
    assert driver.find_element("id", "answered").text == "6 answered"
    answers_of_first.pop(third)
    driver.refresh()  # its own address holds an older copy still: merged, not winning
    assert driver.find_element("id", "answered").text == "6 answered"
    # an older answer to an item (an earlier time) never replaces a newer one
    item_id = next(iter(answers_of_first))
    driver.execute_script(f"merge(reader, {{answers: {{'{item_id}': {{answer: '{flip[truth[item_id]]}', "
                          f"confidence: 1, at: 1}}}}}})")
    press(driver, "\ue014", "\ue014", "\ue014")  # arrow right to the first item nobody answered
    assert driver.find_element("id", "position").text == "Item 7 of 12"
    seventh = shown_item(driver)
    press(driver, "s", "1")
    rows = downloaded_rows(driver, downloads)
    assert len(rows) == 7 and {row["reader"] for row in rows} == {"Dr A"}
    given = {row["item_id"]: (row["answer"], row["confidence"]) for row in rows}
    assert all(given[item] == (answer, "3") for item, answer in answers_of_first.items())
    assert given[third] == (flip[truth[third]], "1") and given[seventh] == ("synthetic", "1")
    assert "Downloaded study-" in driver.find_element("id", "downloaded").text


def test_readers_are_kept_apart_and_named_on_every_item(browser, tmp_path):
    driver, downloads = browser
    page, key = small_study(tmp_path)
    driver.get(page.as_uri())
    assert not driver.find_element("id", "readers").is_displayed()
    start_new_reader(driver, "Dr A")
    for _ in range(3):
        assert driver.find_element("id", "reader-name").text == "Dr A"
        press(driver, "r", "1")

    # reader B opens the page afresh on the same computer: the intro, not A's item 4
    driver.get(page.as_uri())
    assert driver.find_element("id", "intro").is_displayed()
    assert [button.text for button in resume_buttons(driver)] == ["Dr A (3 of 12 answered)"]
    driver.find_element("id", "reader").send_keys("Dr B\n")  # Enter starts
    assert driver.find_element("id", "reader-name").text == "Dr B"
    assert driver.find_element("id", "position").text == "Item 1 of 12"
    assert driver.find_element("id", "answered").text == "0 answered"
    for _ in range(2):
        press(driver, "s", "2")
    rows = downloaded_rows(driver, downloads)
    assert [(row["reader"], row["answer"]) for row in rows] == [("Dr B", "synthetic")] * 2

    # A takes over at any moment and resumes at A's first open item
    driver.find_element("id", "switch-reader").click()
    assert [button.text for button in resume_buttons(driver)] == ["Dr A (3 of 12 answered)",
                                                                  "Dr B (2 of 12 answered)"]
    resume(driver, "Dr A")
    assert driver.find_element("id", "reader-name").text == "Dr A"
    assert driver.find_element("id", "position").text == "Item 4 of 12"
    driver.refresh()  # a reload keeps the tab's reader
    assert driver.find_element("id", "reader-name").text == "Dr A"
    rows = downloaded_rows(driver, downloads)
    assert [(row["reader"], row["answer"]) for row in rows] == [("Dr A", "real")] * 3
    # the same name typed with other case and spacing is the same reader
    driver.find_element("id", "switch-reader").click()
    driver.find_element("id", "reader").send_keys("  dr   b \n")
    assert driver.find_element("id", "answered").text == "2 answered"


def test_without_storage_the_page_says_so_and_downloads_at_any_time(browser, tmp_path):
    driver, downloads = browser
    page, key = small_study(tmp_path)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": (
        "Object.defineProperty(window, 'localStorage', {get() { throw new DOMException('blocked', "
        "'SecurityError'); }});")})
    driver.get(page.as_uri())
    assert driver.find_element("id", "warning").is_displayed()
    assert "does not keep the answers" in driver.find_element("id", "storage-status").text
    assert "close the page and come back" not in driver.find_element("id", "intro").text
    start_new_reader(driver, "Dr C")
    assert driver.find_element("id", "warning").is_displayed()  # on every item too
    assert not driver.find_element("id", "download-now").is_enabled()
    for _ in range(2):
        press(driver, "r", "3")
    rows = downloaded_rows(driver, downloads)
    assert [(row["reader"], row["answer"], row["confidence"]) for row in rows] == [("Dr C", "real", "3")] * 2
    assert "(2 answers)" in driver.find_element("id", "downloaded").text
    driver.refresh()  # the fragment still carries a reload
    assert driver.find_element("id", "answered").text == "2 answered"


def in_view(driver, element_id: str) -> bool:
    return driver.execute_script("const r = document.getElementById(arguments[0]).getBoundingClientRect(); "
                                 "return r.top >= 0 && r.bottom <= window.innerHeight && r.left >= 0 && "
                                 "r.right <= window.innerWidth", element_id)


def test_keyboard_and_small_window_stumbles(browser, tmp_path):
    """Enter starts; a changed answer asks for the confidence again; a missing confidence is explained; focus
    leaves the clicked button; key letters stay readable; at zoom 8 the buttons stay in a 600 and a 360 px
    window; the intro gives the task, the time, where answers go and the scale."""
    driver, _ = browser
    real = make_disc_store(tmp_path / "real", per_class=4, slides=1, patch_size=64, seed=0)
    synthetic = make_disc_store(tmp_path / "synthetic", per_class=4, slides=1, patch_size=64, seed=1,
                                kind="synthetic")
    page = make(real, synthetic, tmp_path / "study", StudyConfig(n=6, zoom=8, seed=1))
    driver.set_window_size(600, 600)
    driver.get(page.as_uri())
    intro = driver.find_element("id", "intro").text
    for words in ("answer whether you think it is real or synthetic", "about 1 to 2 minutes",
                  "time you spend on each item is recorded", "send that file to the person who made this study",
                  "64 × 64 pixels at 0.50 µm per pixel, field 32 µm wide", "8 × 8 square"):
        assert words in intro, words
    driver.find_element("id", "reader").send_keys("Dr D\n")  # Enter in the name field starts
    assert driver.find_element("id", "position").text == "Item 1 of 6"
    assert driver.find_element("id", "scale").text == "0.50 µm per pixel, field 32 µm wide (shown 8×)"
    assert driver.execute_script("return document.getElementById('patch').width") == 512
    for element_id in ("answer-real", "answer-synthetic", "confidence-3", "next"):
        assert in_view(driver, element_id), element_id

    driver.find_element("id", "answer-real").click()
    assert driver.find_element("id", "need-confidence").is_displayed()  # why Next stays disabled
    assert not driver.find_element("id", "next").is_enabled()
    kbd = driver.find_element("css selector", "#answer-real kbd")
    assert kbd.value_of_css_property("color") == "rgba(17, 17, 17, 1)"  # readable on the chosen button
    driver.find_element("id", "confidence-2").click()
    assert driver.find_element("id", "position").text == "Item 2 of 6"
    assert driver.execute_script("return document.activeElement.id") == "position"
    press(driver, " ", "\ue007")  # a stray Space or Enter answers nothing
    assert driver.find_element("id", "answered").text == "1 answered"
    assert not pressed(driver, "answer-real") and not pressed(driver, "answer-synthetic")

    press(driver, "\ue012")  # back to item 1 and change its answer: the old confidence is not kept
    press(driver, "s")
    assert driver.find_element("id", "position").text == "Item 1 of 6"
    assert pressed(driver, "answer-synthetic") and not pressed(driver, "confidence-2")
    assert driver.find_element("id", "need-confidence").is_displayed()
    press(driver, "3")
    assert driver.find_element("id", "position").text == "Item 2 of 6"
    press(driver, "\ue012", "1")  # a changed confidence alone stays on the item
    assert driver.find_element("id", "position").text == "Item 1 of 6" and pressed(driver, "confidence-1")
    assert driver.find_element("id", "answered").text == "1 answered"

    driver.set_window_size(360, 640)
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    for element_id in ("answer-real", "answer-synthetic", "confidence-3", "next"):
        assert in_view(driver, element_id), element_id
