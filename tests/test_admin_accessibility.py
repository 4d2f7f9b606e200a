"""Accessibility faults axe-core found on the app's own admin pages (tests/browser/ scans them in
Chromium): each pinned here on the HTML, so `make test` catches a regression without a browser."""

from __future__ import annotations

import re

import pytest

from klaviyo_consent.models import ConsentText, WebhookDelivery

pytestmark = pytest.mark.django_db


def link_texts(html: str, href: str) -> list[str]:
    """The text of every link to ``href`` (tags inside a link stripped)."""
    links = re.findall(rf'<a [^>]*href="{re.escape(href)}"[^>]*>(.*?)</a>', html, re.S)
    return [re.sub(r"<[^>]+>", "", text).strip() for text in links]


def test_a_blank_value_in_a_list_filter_is_a_link_with_words(admin_client):
    # axe "link-name" (serious): Django writes a blank locale as <a href="?locale="></a>.
    ConsentText.objects.create(key="newsletter", version=1, locale="", body="Words.")
    ConsentText.objects.create(key="newsletter", version=1, locale="en-GB", body="Words.")
    WebhookDelivery.objects.create(webhook_id="", body={})

    texts = admin_client.get("/admin/klaviyo_consent/consenttext/").content.decode()
    webhooks = admin_client.get("/admin/klaviyo_consent/webhookdelivery/").content.decode()

    assert link_texts(texts, "?locale=") == ["(blank)"]
    assert link_texts(texts, "?locale=en-GB") == ["en-GB"]
    assert link_texts(webhooks, "?webhook_id=") == ["(blank)"]


def test_every_date_and_time_input_of_a_consent_text_has_a_label(admin_client):
    # axe "label" (critical): Django writes "Date:" and "Time:" as bare text beside the inputs.
    html = admin_client.get("/admin/klaviyo_consent/consenttext/add/").content.decode()

    inputs = re.findall(r'<input [^>]*id="(id_(?:created|retired)_at_\d)"', html)
    assert sorted(inputs) == [
        "id_created_at_0",
        "id_created_at_1",
        "id_retired_at_0",
        "id_retired_at_1",
    ]
    for input_id in inputs:
        assert re.search(rf'<label [^>]*for="{input_id}"[^>]*>\s*\w', html), input_id
