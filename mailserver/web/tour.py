"""A tour of every portal page in a real browser (issue 15): what `bin/portal-screenshots`
photographs and what the accessibility test (tests/test_portal.py) runs axe-core on.

Selenium and Debian's chromium with chromium-driver are development tools (the tests' extras and
.ci/run install them), not the server's: this module imports Selenium only when a browser is made.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: the pages, in the order the tour opens them: (name, path, needs the citizen signed in)
PAGES = (
    ("home", "/", False),
    ("activate", "/activate", False),
    ("signin", "/signin", False),
    ("notices", "/notices", True),
    ("notice", None, True),  # the newest notice, from the list's first link
    ("subscriptions", "/subscriptions", True),
    ("surveys", "/surveys", True),
    ("survey", "/surveys/demo-appraisal", True),
    ("applications", "/applications", True),
    ("account", "/account", True),
)
PHONE, DESKTOP = 375, 1280


@contextmanager
def chromium(width: int = PHONE, height: int = 812) -> Iterator:
    """A headless Chromium driven over WebDriver (chromium-driver), WIDTH CSS pixels wide."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars",
                "--force-device-scale-factor=1", f"--window-size={width},{height}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for_page(driver, action: Callable[[], None]) -> None:
    """Do what navigates (a click, a submit) and wait for the next page to load."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    page = driver.find_element(By.TAG_NAME, "html")
    action()

    def gone(_) -> bool:
        try:
            page.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:  # Chromium's word for the same while the old page unloads
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    WebDriverWait(driver, 30).until(gone)


def sign_in(driver, base: str, address: str, password: str) -> None:
    """Through the portal's sign-in link and the city's provider, as a citizen does."""
    from selenium.webdriver.common.by import By

    driver.get(base + "/signin")
    driver.find_element(By.ID, "address").send_keys(address)
    driver.find_element(By.CSS_SELECTOR, "input[type=password]").send_keys(password)
    button = driver.find_element(By.CSS_SELECTOR, "form button[type=submit]")
    wait_for_page(driver, button.click)


def tour(driver, base: str, address: str, password: str, visit: Callable[[str], None]) -> list[str]:
    """Open every page of PAGES (signed out, then signed in as ADDRESS) and call ``visit(name)``
    on each once it is loaded; the names visited. The browser is left signed in."""
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    seen = []
    signed_in = False
    for name, path, needs_citizen in PAGES:
        if needs_citizen and not signed_in:
            sign_in(driver, base, address, password)
            signed_in = True
        if path is None:  # the newest notice
            driver.get(base + "/notices")
            link = driver.find_element(By.CSS_SELECTOR, "main ol.list a")
            wait_for_page(driver, link.click)
        else:
            driver.get(base + path)
        visit(name)
        seen.append(name)
    return seen


def screenshot(driver, path, width: int, max_height: int = 6000) -> None:
    """The whole page (up to MAX_HEIGHT pixels) at WIDTH, as a PNG at PATH."""
    driver.set_window_size(width, 800)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(max(int(height), 600), max_height))
    driver.save_screenshot(str(path))
