"""``{% klaviyo_consent_dashboard as dashboard %}``: the admin index's figures
(services.reports.dashboard), for ``admin/klaviyo_consent/app_index.html``."""

from __future__ import annotations

from django import template

from klaviyo_consent.services.reports import Dashboard, dashboard

register = template.Library()


@register.simple_tag
def klaviyo_consent_dashboard() -> Dashboard:
    return dashboard()
