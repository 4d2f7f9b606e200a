"""A real browser, start to finish: sign up on the example site, find the person in the admin
with verdicts, withdraw from the admin, and see Klaviyo's side change.

Debian's Chromium through Playwright (tests/browser/conftest.py), headless; axe-core finds no
serious or critical accessibility violation on the signup page or the admin profile page; the
signup page at 390 px and the admin profile page at 1280 px are photographed into
``.ci/artifacts/`` and every field and every grid column is checked to lie inside the viewport.
Locators are roles and labels, as a person using a screen reader would find things.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "playwright.sync_api",
    reason="Playwright is not installed: `pip install -e '.[test,browser]'` (make test-browser)",
)
from playwright.sync_api import Locator, Page, expect  # noqa: E402

pytestmark = pytest.mark.browser

#: A phone (it honours ``<meta name="viewport">``) and a laptop, as browser context options.
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
#: How long a click, or a wait for what a page shows, may take before the step fails: a
#: signup's push and read-back run in the request, on a CI machine others share.
STEP_TIMEOUT_MS = 15_000
expect.set_options(timeout=STEP_TIMEOUT_MS)
#: axe-core impacts that fail the test; moderate and minor ones are printed, not failed.
FAILING_IMPACTS = ("serious", "critical")
CHANNELS = ("email", "sms")
#: A verdict of "applied" (Klaviyo shows what the ledger says), not "not applied".
APPLIED = re.compile(r"(?<!not )(?<!not_)applied", re.I)


# -- what every page check shares -----------------------------------------------------------


#: Django's own admin chrome, left out of the scan of the app's other pages (not of the profile
#: page): its breadcrumbs are white links in light blue text without an underline (axe-core
#: ``link-in-text-block``, contrast 1.42:1), Django's stylesheet, not this app's.
DJANGO_OWN = [".breadcrumbs"]


def serious_accessibility_violations(
    page: Page, axe_script: Path, exclude: list[str] | None = None
) -> list[str]:
    """axe-core's serious and critical violations of the page as it stands, one line each.

    axe-core's default rule set (WCAG 2.0/2.1/2.2 A and AA plus best practices), run in the
    page on all of it but the ``exclude`` CSS selectors; each line names the rule, its help
    text and the elements it found.
    """
    page.add_script_tag(path=str(axe_script))
    results = page.evaluate(
        """async (exclude) => await axe.run(
            {include: [document], exclude: exclude.map((selector) => [selector])},
            {resultTypes: ["violations"]},
        )""",
        exclude or [],
    )
    lines = []
    for violation in results["violations"]:
        targets = ", ".join(" ".join(node["target"]) for node in violation["nodes"][:5])
        line = f"{violation['impact']}: {violation['id']} ({violation['help']}) at {targets}"
        if violation["impact"] in FAILING_IMPACTS:
            lines.append(line)
        else:
            print(f"axe, not failing: {page.url}: {line}")
    return lines


#: Why an element is not wholly in sight across the page's width, or null: outside the viewport,
#: or cut off by an ancestor that clips or scrolls its overflow (a grid column hidden behind
#: ``overflow: hidden``, or reachable only by scrolling a box sideways).
NOT_IN_SIGHT = """(element, width) => {
    const box = element.getBoundingClientRect();
    const span = (r) => `x=${Math.round(r.left)}..${Math.round(r.right)} px`;
    if (box.left < -0.5 || box.right > width + 0.5) {
        return `${span(box)}, outside the ${width} px viewport`;
    }
    for (let outer = element.parentElement; outer; outer = outer.parentElement) {
        if (getComputedStyle(outer).overflowX === "visible") continue;
        const clip = outer.getBoundingClientRect();
        if (box.left < clip.left - 0.5 || box.right > clip.right + 0.5) {
            const name = outer.tagName.toLowerCase() + (outer.id ? "#" + outer.id : "")
                + (outer.classList.length ? "." + [...outer.classList].join(".") : "");
            return `${span(box)}, cut off by ${name} (${span(clip)})`;
        }
    }
    return null;
}"""


def not_in_sight(page: Page, named: dict[str, Locator]) -> list[str]:
    """What is not wholly in sight across the viewport's width, by name (empty: all is).

    Each element must be visible, inside the viewport and not cut off by a clipping or
    scrolling ancestor; and the page itself must not scroll sideways. The width is the
    viewport's, not the layout's: a phone page without ``<meta name="viewport">`` is laid out
    980 px wide and shrunk, and fails here.
    """
    width = page.viewport_size["width"]
    problems = []
    for name, locator in named.items():
        expect(locator, f"{name} is not visible").to_be_visible()
        why = locator.evaluate(NOT_IN_SIGHT, width)
        if why:
            problems.append(f"{name}: {why}")
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    if scroll_width > width:
        problems.append(f"the page scrolls sideways: {scroll_width} px wide in {width} px")
    return problems


#: The words of an element's text that the layout broke across two lines ("SUBSCRIPTIO / N"):
#: each word's line boxes, from a Range over it, lie on more than one line.
BROKEN_WORDS = """(element) => {
    const broken = [];
    const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        for (const match of node.data.matchAll(/\\S+/g)) {
            const range = document.createRange();
            range.setStart(node, match.index);
            range.setEnd(node, match.index + match[0].length);
            const lines = new Set(
                [...range.getClientRects()].filter((r) => r.width > 0).map((r) => Math.round(r.top))
            );
            if (lines.size > 1) broken.push(match[0]);
        }
    }
    return broken;
}"""


def broken_words(named: dict[str, Locator]) -> list[str]:
    """Which of the elements have a word broken across lines, and which words (empty: none)."""
    problems = []
    for name, locator in named.items():
        words = locator.evaluate(BROKEN_WORDS)
        if words:
            problems.append(f"{name}: {', '.join(words)}")
    return problems


def open_page(new_context: Any, device: dict[str, Any]) -> Page:
    """A page in a fresh browser context (its own cookies) emulating ``device``."""
    context = new_context(**device)
    context.set_default_timeout(STEP_TIMEOUT_MS)
    return context.new_page()


def screenshot(page: Page, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


# -- the signup page (example_project/signup, the drop-in form) ------------------------------


def signup_fields(page: Page) -> dict[str, Locator]:
    """Every control of the drop-in form (``{% consent_form %}``), found by its label; each
    consent box within its channel's group ("Emails", "Text messages")."""
    emails = page.get_by_role("group", name="Emails")
    texts = page.get_by_role("group", name="Text messages")
    return {
        "email address": emails.get_by_role("textbox", name="Email address"),
        "email consent box": emails.get_by_role("checkbox"),
        "country": texts.get_by_role("combobox", name="Country"),
        "mobile number": texts.get_by_role("textbox", name="Mobile number"),
        "SMS consent box": texts.get_by_role("checkbox"),
        "sign up button": page.get_by_role("button", name="Sign up"),
    }


def sign_up(page: Page, email: str, mobile: str) -> None:
    """Sign up for email and SMS marketing with a UK mobile written as people in the UK
    write it, and see the confirmation (which names the address)."""
    page.goto("/")
    fields = signup_fields(page)
    fields["email address"].fill(email)
    fields["email consent box"].check()
    fields["country"].select_option(label="United Kingdom")
    fields["mobile number"].fill(mobile)
    fields["SMS consent box"].check()
    fields["sign up button"].click()
    expect(page.get_by_role("status")).to_contain_text(email)


# -- the admin -----------------------------------------------------------------------------


def log_in(page: Page, server: Any) -> None:
    page.goto("/admin/login/")
    page.get_by_label("Username").fill(server.username)
    page.get_by_label("Password").fill(server.password)
    page.get_by_role("button", name="Log in").click()
    expect(
        page.get_by_role("link", name="Log out").or_(page.get_by_role("button", name="Log out"))
    ).to_be_visible()


def open_profile(page: Page, email: str) -> None:
    """Find the person from the profile list's search box and open their page."""
    page.goto("/admin/klaviyo_consent/profile/")
    page.get_by_role("textbox", name="Search").fill(email)
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name=email).click()
    expect(page).to_have_title(re.compile(re.escape(email)))


def consent_grid(page: Page) -> Locator:
    """The profile page's grid: Klaviyo's state beside the ledger's, per channel and purpose."""
    return page.get_by_role("main").get_by_role("table", name=re.compile("Klaviyo")).first


def grid_row(page: Page, channel: str) -> Locator:
    """The grid's row of ``channel``'s marketing subscription ("Email marketing")."""
    return consent_grid(page).get_by_role("row", name=re.compile(rf"^{channel}\W*marketing", re.I))


def column_headers(page: Page) -> dict[str, Locator]:
    """Every named column header of every table in the page's main content (the grid, the
    timeline); a header without words (Django's inline ``th.original``) names no column."""
    headers = page.get_by_role("main").get_by_role("columnheader")
    expect(headers.first).to_be_visible()
    named = {}
    for index, header in enumerate(headers.all(), 1):
        words = " ".join(header.text_content().split())
        if words:
            named[f"column {index} {words!r}"] = header
    return named


def withdraw_in_admin(page: Page, reason: str) -> None:
    """From the open profile page: "Withdraw consent…", tick both marketing subscriptions on
    the confirmation page, give the (required) reason, confirm."""
    page.get_by_role("button", name=re.compile(r"^Withdraw consent")).click()
    expect(page.get_by_role("heading", name="Withdraw consent")).to_be_visible()
    for channel in ("Email", "SMS"):
        page.get_by_role("checkbox", name=f"{channel} marketing").check()
    page.get_by_role("textbox", name="Reason").fill(reason)
    page.get_by_role("button", name=re.compile("withdraw", re.I)).click()
    expect(page.get_by_text(re.compile(r"^Withdrew"))).to_be_visible()


def klaviyo_consent_of(server: Any, email: str) -> dict[str, str | None]:
    """Klaviyo's consent per channel (marketing) for ``email``, read back from the fake."""
    profile = server.klaviyo_profile(email)
    assert profile is not None, f"Klaviyo has no profile for {email}"
    return {
        channel: profile["subscriptions"][channel]["marketing"].get("consent")
        for channel in CHANNELS
    }


# -- the tests -----------------------------------------------------------------------------


def test_signup_page_on_a_phone_shows_every_field_and_has_no_serious_axe_violation(
    new_context: Any, axe_script: Path, artifacts: Path
) -> None:
    page = open_page(new_context, PHONE)
    page.goto("/")

    screenshot(page, artifacts, "signup-390")
    outside = not_in_sight(page, signup_fields(page))
    violations = serious_accessibility_violations(page, axe_script)
    problems = [f"not in sight: {o}" for o in outside] + [f"axe: {v}" for v in violations]
    assert problems == [], "\n".join(problems)


def test_admin_profile_page_at_1280_shows_every_column_and_has_no_serious_axe_violation(
    new_context: Any, example_server: Any, axe_script: Path, artifacts: Path
) -> None:
    email = "grid@example.com"
    shopper = open_page(new_context, PHONE)
    sign_up(shopper, email, "07400 123450")
    page = open_page(new_context, DESKTOP)
    log_in(page, example_server)

    open_profile(page, email)

    screenshot(page, artifacts, "admin-profile-1280")
    columns = column_headers(page)
    outside = not_in_sight(page, columns)
    broken = broken_words(columns)
    violations = serious_accessibility_violations(page, axe_script)
    problems = (
        [f"not in sight: {o}" for o in outside]
        + [f"a word broken across lines: {b}" for b in broken]
        + [f"axe: {v}" for v in violations]
    )
    assert problems == [], "\n".join(problems)


def test_admin_profile_and_event_lists_at_1280_show_every_column(
    new_context: Any, example_server: Any
) -> None:
    sign_up(open_page(new_context, PHONE), "lists@example.com", "07400 123453")
    page = open_page(new_context, DESKTOP)
    log_in(page, example_server)

    problems = []
    for path in ("/admin/klaviyo_consent/profile/", "/admin/klaviyo_consent/consentevent/"):
        page.goto(path)
        problems += [f"{path} {p}" for p in not_in_sight(page, column_headers(page))]

    assert problems == [], "\n".join(problems)


def test_signup_then_withdrawal_in_the_admin_changes_klaviyos_side(
    new_context: Any, example_server: Any
) -> None:
    email = "flow@example.com"
    shopper = open_page(new_context, PHONE)
    staff = open_page(new_context, DESKTOP)

    sign_up(shopper, email, "07400 123451")
    assert klaviyo_consent_of(example_server, email) == {
        "email": "SUBSCRIBED",
        "sms": "SUBSCRIBED",
    }
    log_in(staff, example_server)
    open_profile(staff, email)
    for channel in CHANNELS:
        expect(grid_row(staff, channel)).to_contain_text(APPLIED)

    withdraw_in_admin(staff, reason="Asked by phone to stop all marketing, ticket 4821")

    assert klaviyo_consent_of(example_server, email) == {
        "email": "UNSUBSCRIBED",
        "sms": "UNSUBSCRIBED",
    }
    staff.reload()
    for channel in CHANNELS:
        expect(grid_row(staff, channel)).to_contain_text(re.compile("unsubscribed", re.I))
        expect(grid_row(staff, channel)).to_contain_text(APPLIED)


#: The app's admin pages no other part of issue 12 rebuilds, each scanned as staff see it.
OTHER_ADMIN_PAGES = [
    "/admin/klaviyo_consent/consenttext/",
    "/admin/klaviyo_consent/consenttext/add/",
    "/admin/klaviyo_consent/checkpoint/",
    "/admin/klaviyo_consent/verificationrun/",
    "/admin/klaviyo_consent/webhookdelivery/",
    "/admin/klaviyo_consent/klaviyolist/",
]


def test_the_apps_other_admin_pages_have_no_serious_axe_violation(
    new_context: Any, example_server: Any, axe_script: Path
) -> None:
    sign_up(open_page(new_context, PHONE), "texts@example.com", "07400 123452")
    page = open_page(new_context, DESKTOP)
    page.goto("/admin/login/")
    found = [f"/admin/login/ {v}" for v in serious_accessibility_violations(page, axe_script)]
    log_in(page, example_server)

    for path in OTHER_ADMIN_PAGES:
        response = page.goto(path)
        assert response is not None and response.ok, path
        found += [
            f"{path} {v}"
            for v in serious_accessibility_violations(page, axe_script, exclude=DJANGO_OWN)
        ]

    assert found == [], "\n".join(found)
