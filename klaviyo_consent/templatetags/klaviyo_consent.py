"""``{% load klaviyo_consent %}`` then ``{% consent_form %}``: the drop-in consent form.

Needs the request in the context (``django.template.context_processors.request``), sessions,
and the form's endpoint mounted: ``path("consent/", include("klaviyo_consent.urls"))``.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.forms.utils import ErrorDict

from klaviyo_consent.choices import Channel
from klaviyo_consent.forms import ConsentForm
from klaviyo_consent.views import DONE_KEY, FORM_KEY

register = template.Library()


@register.inclusion_tag("klaviyo_consent/consent_form.html", takes_context=True)
def consent_form(context: Any, styles: bool = True, heading: str = "") -> dict[str, Any]:
    """The form, or the confirmation of what was just recorded, for the page being rendered.

    ``styles=False`` leaves out the app's stylesheet (a site styling ``.kc-form`` itself);
    ``heading`` is an optional ``<h2>`` above the form.
    """
    request = context.get("request")
    languages = request.META.get("HTTP_ACCEPT_LANGUAGE", "") if request is not None else ""
    session = getattr(request, "session", None)
    done = session.pop(DONE_KEY, None) if session is not None else None
    shown = session.pop(FORM_KEY, None) if session is not None else None
    if shown:
        form = ConsentForm(shown["data"], accept_language=languages)
        data = form.data.copy()
        data["email_text"] = form.texts[Channel.EMAIL].pk
        data["sms_text"] = form.texts[Channel.SMS].pk
        form.data = data
        form.cleaned_data = {}
        form._errors = ErrorDict()
        for field, messages in shown["errors"].items():
            visible = field in form.fields and not form.fields[field].widget.is_hidden
            form.add_error(field if visible else None, messages)
    else:
        form = ConsentForm(accept_language=languages)
    form.describe()
    return {
        "form": form,
        "done": done,
        "next": request.get_full_path() if request is not None else "/",
        "csrf_token": context.get("csrf_token"),
        "styles": styles,
        "heading": heading,
    }
