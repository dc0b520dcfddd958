"""The playground page at ``/``, driven in headless Chromium (Debian's chromium and chromedriver,
installed by ``make install``) against a live ``odeserve serve``: submit the seed example, see
progress arrive, see the finished plot and the result links, and see a field error for a broken
equation next to the equations."""

from __future__ import annotations

import shutil

import pytest

from tests.test_readme import live_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.browser


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromedriver = shutil.which("chromedriver")
    chromium = shutil.which("chromium")
    assert chromedriver and chromium, "chromium and chromium-driver are required: `make install` installs them"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1200"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    yield driver
    driver.quit()


def test_playground_solves_the_seed_example_and_shows_field_errors(live_server, browser) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 120)
    browser.get(f"http://127.0.0.1:{live_server}/")
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    assert browser.find_element(By.ID, "equations").get_attribute("value") == "y' = -2*x*y"
    assert "seed_gauss" in [o.text for o in browser.find_elements(By.CSS_SELECTOR, "#example option")]

    browser.find_element(By.ID, "submit").click()
    wait.until(lambda d: int(d.find_element(By.ID, "loss").get_attribute("data-points") or 0) > 0)
    assert "iteration" in browser.find_element(By.ID, "progress").text
    wait.until(lambda d: d.find_element(By.ID, "plot").is_displayed())
    wait.until(lambda d: d.execute_script("return document.getElementById('plot').naturalWidth") > 0)
    assert browser.find_element(By.ID, "status").text.startswith("succeeded")
    hrefs = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#links a")]
    assert any(h.endswith("/solution.csv") for h in hrefs) and any(h.endswith("/model.pt") for h in hrefs)
    assert any(h.endswith("/model.pt2") for h in hrefs)

    equations = browser.find_element(By.ID, "equations")
    equations.clear()
    equations.send_keys("y' = sinn(x)")
    browser.find_element(By.ID, "submit").click()
    error = browser.find_element(By.CSS_SELECTOR, '.error[data-field="equations"]')
    wait.until(lambda d: error.text != "")
    assert "unknown function 'sinn'" in error.text and "did you mean 'sin'" in error.text
    assert "invalid" in (equations.get_attribute("class") or "")
