"""The browsable API with a starting body: each write's POST form opens on an example request
(:mod:`klaviyo_consent.api.examples`) instead of an empty box."""

from __future__ import annotations

import json
from typing import Any

from rest_framework.renderers import BrowsableAPIRenderer


class ExampleBodyBrowsableAPIRenderer(BrowsableAPIRenderer):
    """DRF's browsable API; the raw-data form's content starts as the view's ``example_body``."""

    def get_raw_data_form(self, data: Any, view: Any, method: str, request: Any) -> Any:
        form = super().get_raw_data_form(data, view, method, request)
        example = getattr(view, "example_body", None)
        if form is not None and example is not None and method == "POST":
            form.fields["_content"].initial = json.dumps(example, indent=4, ensure_ascii=False)
        return form


class ExampleBody:
    """For the app's write views: the site's renderers, with DRF's browsable API replaced by
    :class:`ExampleBodyBrowsableAPIRenderer` (a site without the browsable API keeps none)."""

    #: The request body the browsable API's POST form starts with.
    example_body: dict[str, Any] | None = None

    def get_renderers(self) -> list[Any]:
        return [
            ExampleBodyBrowsableAPIRenderer()
            if type(renderer) is BrowsableAPIRenderer
            else renderer
            for renderer in super().get_renderers()  # type: ignore[misc]
        ]
