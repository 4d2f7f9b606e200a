"""The demo's signup page: records consent through the same service as the API."""

from django.contrib import messages
from django.shortcuts import redirect, render

from example_project.signup.forms import SignupForm
from klaviyo_consent.evidence import evidence_from
from klaviyo_consent.exceptions import ConsentValidationError, IdentityConflict
from klaviyo_consent.services.ledger import record_consent

IDENTITY_CONFLICT_MESSAGE = (
    "We could not sign you up with these details. If you have signed up before, use the "
    "same email address and mobile number as then, or contact us and we will help."
)


def signup(request):
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            result = record_consent(
                form.to_request(
                    evidence=evidence_from(request, page_url=request.build_absolute_uri()),
                    recorded_by=request.user if request.user.is_authenticated else None,
                )
            )
        except IdentityConflict:
            # Say nothing about whoever else holds these details (docs/identity.md).
            form.add_error(None, IDENTITY_CONFLICT_MESSAGE)
        except ConsentValidationError as error:
            field = (error.field or "").rsplit(".", 1)[-1]
            form.add_error(field if field in form.fields else None, error.message)
        else:
            messages.success(
                request,
                f"Thanks! Recorded {len(result.events)} consent(s) for {result.profile}.",
            )
            return redirect("signup")
    return render(request, "signup/signup.html", {"form": form})
