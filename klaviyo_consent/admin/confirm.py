"""The confirmation-page pattern for admin actions that record something: a form with a
required reason, a refusal staff can read, a LogEntry in the object's history.

Use it for every action that writes to the ledger or calls Klaviyo::

    @confirmed_action(description="Withdraw consent", form_class=WithdrawForm)
    def withdraw_action(modeladmin, request, queryset, data) -> str:
        record_consent(...)            # the one service call
        return "Withdrawn."            # the message staff see

The action renders ``admin/klaviyo_consent/confirm_action.html`` (the selected objects, what
will happen, the form); the page posts back to the changelist with ``confirm=yes``; a valid
form runs ``run`` once and logs the reason in each object's admin history. A validation
error from the service (:class:`ConsentValidationError`, :class:`IdentityConflict`) is shown
on the form, not as a 500. Staff without the permission get
``admin/klaviyo_consent/refused.html`` naming the permission they lack
(:meth:`ConfirmedActionsMixin.changelist_view`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from klaviyo_consent.exceptions import ConsentValidationError
from klaviyo_consent.validators import REASON_NAMES_A_PERSON, clean_reason

#: The longest reason kept: it goes into an event's ``method_detail`` (255 characters).
MAX_REASON_LENGTH = 200

#: The permission ``permissions=["operate"]`` actions need (ReadOnlyMixin.has_operate_permission).
OPERATE_PERMISSION = "klaviyo_consent.change_profile"


class ReasonForm(forms.Form):
    """Every confirmed action asks why; subclasses add the action's own fields."""

    reason = forms.CharField(
        label="Reason",
        max_length=MAX_REASON_LENGTH,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Required. Kept with the record (its method detail) and in the history, "
        "e.g. “customer asked by phone, ticket 4821”.",
    )

    def __init__(self, *args: Any, queryset: QuerySet | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queryset = queryset

    def clean_reason(self) -> str:
        """The reason stays on append-only rows after an erasure: it must name nobody."""
        reason = self.cleaned_data["reason"]
        try:
            return clean_reason(reason)
        except ConsentValidationError as error:
            raise forms.ValidationError(
                REASON_NAMES_A_PERSON[0].upper() + REASON_NAMES_A_PERSON[1:] + "."
            ) from error


ActionRun = Callable[[Any, HttpRequest, QuerySet, dict[str, Any]], str]


def confirmed_action(
    *,
    description: str,
    form_class: type[ReasonForm] = ReasonForm,
    explanation: str = "",
    single: bool = False,
    permissions: tuple[str, ...] = ("operate",),
    button: str = "",
    danger: bool = False,
) -> Callable[[ActionRun], Callable[..., HttpResponse | None]]:
    """Turn ``run(modeladmin, request, queryset, cleaned_data) -> message`` into an admin action
    that asks for confirmation and a reason first.

    ``single``: the action works on exactly one object (the others are refused with a message).
    ``permissions``: as ``@admin.action``'s (``operate`` needs ``change_profile``).
    ``danger``: the confirm button is styled as a deletion's.
    """

    def decorate(run: ActionRun) -> Callable[..., HttpResponse | None]:
        @wraps(run)
        def action(modeladmin: Any, request: HttpRequest, queryset: QuerySet) -> Any:
            objects = list(queryset[: MAX_SHOWN + 1])
            if single and len(objects) != 1:
                modeladmin.message_user(
                    request, f"“{description}” works on one profile: select one.", messages.ERROR
                )
                return None
            confirming = request.POST.get("confirm") == "yes"
            form = form_class(request.POST if confirming else None, queryset=queryset)
            if confirming and form.is_valid():
                try:
                    message = run(modeladmin, request, queryset, form.cleaned_data)
                except ConsentValidationError as error:
                    form.add_error(None, error.message)
                else:
                    reason = form.cleaned_data["reason"]
                    # Read again: the history's object_repr must be what the action left (an
                    # erased profile's, not the email it had before).
                    shown = [obj.pk for obj in objects[:MAX_SHOWN]]
                    for obj in modeladmin.model._default_manager.filter(pk__in=shown):
                        modeladmin.log_change(request, obj, f"{description}. Reason: {reason}")
                    modeladmin.message_user(request, message, messages.SUCCESS)
                    if len(objects) == 1:
                        opts = modeladmin.model._meta
                        return HttpResponseRedirect(
                            reverse(
                                f"admin:{opts.app_label}_{opts.model_name}_change",
                                args=[objects[0].pk],
                            )
                        )
                    return None
            return TemplateResponse(
                request,
                "admin/klaviyo_consent/confirm_action.html",
                {
                    **modeladmin.admin_site.each_context(request),
                    "title": description,
                    "explanation": explanation,
                    "form": form,
                    "objects": objects[:MAX_SHOWN],
                    "more": len(objects) > MAX_SHOWN,
                    "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
                    "select_across": request.POST.get("select_across", "0"),
                    "action": run.__name__,
                    "button": button or description,
                    "danger": danger,
                    "opts": modeladmin.model._meta,
                    "media": modeladmin.media + form.media,
                },
            )

        action.confirmed = True  # type: ignore[attr-defined]
        return admin.action(permissions=list(permissions), description=description)(action)

    return decorate


#: How many selected objects a confirmation page lists (and logs the reason on) by name.
MAX_SHOWN = 100


class ConfirmedActionsMixin:
    """A model admin whose confirmed actions refuse staff without the permission in words."""

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        name = request.POST.get("action") if request.method == "POST" else None
        refused = self._refused_action(request, name) if name else None
        if refused is not None:
            return refused
        return super().changelist_view(request, extra_context)  # type: ignore[misc]

    def _refused_action(self, request: HttpRequest, name: str) -> HttpResponse | None:
        func = getattr(type(self), name, None) or next(
            (
                action
                for action in self.actions or ()  # type: ignore[attr-defined]
                if callable(action) and action.__name__ == name
            ),
            None,
        )
        if not getattr(func, "confirmed", False):
            return None
        if name in self.get_actions(request):  # type: ignore[attr-defined]
            return None
        return refusal(self, request, getattr(func, "short_description", name))


def refusal(modeladmin: Any, request: HttpRequest, what: str) -> TemplateResponse:
    """A readable 403: what was refused, which permission it needs, whom to ask."""
    opts = modeladmin.model._meta
    response = TemplateResponse(
        request,
        "admin/klaviyo_consent/refused.html",
        {
            **modeladmin.admin_site.each_context(request),
            "title": "You cannot do this",
            "what": what,
            "permission": "Can change profile",
            "codename": OPERATE_PERMISSION,
            "opts": opts,
        },
        status=403,
    )
    return response
