"""Django admin pieces that axe-core finds inaccessible, in versions that are not.

Each class names the axe-core rule it satisfies; the browser test (tests/browser/) runs the rules
in Chromium and tests/test_admin_accessibility.py pins the HTML.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.contrib import admin
from django.contrib.admin.widgets import AdminSplitDateTime

#: What a filter shows for a blank value (Django shows nothing, an empty link).
BLANK_DISPLAY = "(blank)"


class LabelledSplitDateTime(AdminSplitDateTime):
    """The admin's date and time inputs, each with a ``<label>`` (axe-core rule ``label``).

    Django 5.2 writes "Date:" and "Time:" as bare text beside the two inputs, so a screen
    reader announces two unnamed text boxes; Django 6.1 makes them labels, and this is its
    template, for 5.2. The field's own label names the pair (Django puts the pair in a
    ``<fieldset>`` with the field's label as its ``<legend>``).
    """

    template_name = "admin/klaviyo_consent/widgets/split_datetime.html"


class BlankNamedValuesFilter(admin.AllValuesFieldListFilter):
    """``list_filter`` on a text column that may be blank (axe-core rule ``link-name``).

    Django's values filter writes the blank value as ``<a href="?locale="></a>``, a link
    without words; this one names it :data:`BLANK_DISPLAY`.
    """

    def choices(self, changelist: Any) -> Iterator[dict[str, Any]]:
        for choice in super().choices(changelist):
            if choice["display"] == "":
                choice = {**choice, "display": BLANK_DISPLAY}
            yield choice
