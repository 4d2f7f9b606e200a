"""Request and answer bodies checked with the official SDK's pydantic models (klaviyo-api).

A body the SDK refuses becomes Klaviyo-shaped JSON:API errors pointing at the bad field.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from klaviyo_consent.testing.fake.errors import error_object


@functools.lru_cache(maxsize=256)
def _model_fields(title: str) -> frozenset[str] | None:
    import openapi_client.models as models

    try:
        model = getattr(models, title)
        return frozenset(info.alias or name for name, info in model.model_fields.items())
    except Exception:
        return None


def _walk(node: Any, path: str = "") -> Iterable[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, child in node.items():
            yield from _walk(child, f"{path}/{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _walk(child, f"{path}/{index}")


def _follow(node: Any, loc: tuple[Any, ...]) -> tuple[bool, Any]:
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return False, None
    return True, node


def _locate(exc: ValidationError, document: Any) -> str:
    """Best-effort JSON pointer (relative to ``document``) of the first error pydantic reports.

    The SDK validates nested objects through separate ``from_dict`` calls, so pydantic's
    ``loc`` is relative to the innermost model (named by ``exc.title``); find the object in
    the document that has that model's keys and holds the offending value.
    """
    details = exc.errors()
    if not details:
        return ""
    loc = tuple(details[0]["loc"])
    bad = details[0].get("input")
    suffix = "".join(f"/{part}" for part in loc)
    fields = _model_fields(exc.title)
    for strict in (True, False):
        for path, node in _walk(document):
            if strict and (fields is None or not set(node) <= fields):
                continue
            found, value = _follow(node, loc)
            if (not found and bad is None) or (found and type(value) is type(bad) and value == bad):
                return path + suffix
    return suffix


def _sdk_errors(
    exc: Exception, document: Any, item_model: type, items_pointer: str
) -> list[dict[str, Any]]:
    """JSON:API errors for a body the SDK rejected: one per bad profile, else one for the job."""
    items = _follow(document, ("data", "attributes", "profiles", "data"))[1]
    errors: list[dict[str, Any]] = []
    if isinstance(items, list):
        for index, item in enumerate(items):
            try:
                item_model.from_dict(item)
            except ValidationError as item_exc:
                detail = item_exc.errors()[0]["msg"] if item_exc.errors() else str(item_exc)
                pointer = f"{items_pointer}/{index}{_locate(item_exc, item)}"
                errors.append(error_object(400, detail, pointer=pointer))
            except (TypeError, AttributeError, KeyError, ValueError) as item_exc:
                errors.append(
                    error_object(
                        400, f"Invalid profile: {item_exc}", pointer=f"{items_pointer}/{index}"
                    )
                )
    if errors:
        return errors
    if isinstance(exc, ValidationError) and exc.errors():
        return [
            error_object(400, exc.errors()[0]["msg"], pointer=_locate(exc, document) or "/data")
        ]
    return [error_object(400, f"Invalid request body: {exc}", pointer="/data")]


def _validate_with_sdk(model_name: str, document: Any) -> None:
    """Fail loudly when the fake answers something the official SDK would not accept."""
    import openapi_client.models as models

    model = getattr(models, model_name)
    try:
        model.from_dict(document)
    except (ValidationError, TypeError, KeyError, ValueError) as exc:
        raise AssertionError(f"FakeKlaviyo produced a {model_name} the SDK rejects: {exc}") from exc
