from typing import Any

from django import forms

from klaviyo_consent.choices import Consent, Method
from klaviyo_consent.services.ledger import ConsentRequest, Evidence

SMS_DISCLOSURE = (
    "By ticking this box you agree to receive recurring automated marketing text messages "
    "from Example Shop at the number provided. Consent is not a condition of purchase. "
    "Msg & data rates may apply. Msg frequency varies. Reply HELP for help and STOP to cancel."
)
EMAIL_DISCLOSURE = "Email me news and offers from Example Shop. Unsubscribe at any time."


class SignupForm(forms.Form):
    email = forms.EmailField(label="Email")
    email_marketing = forms.BooleanField(label=EMAIL_DISCLOSURE, required=False, initial=False)
    phone_number = forms.CharField(
        label="Mobile phone (optional)",
        required=False,
        help_text="In international format, e.g. +44 7911 123456.",
    )
    sms_marketing = forms.BooleanField(label=SMS_DISCLOSURE, required=False, initial=False)

    def clean(self):
        data = super().clean()
        if data.get("sms_marketing") and not data.get("phone_number"):
            self.add_error("phone_number", "Give a mobile number to receive text messages.")
        if not (data.get("email_marketing") or data.get("sms_marketing")):
            raise forms.ValidationError("Tick at least one box to sign up.")
        return data

    def to_request(self, *, evidence: Evidence, recorded_by: Any) -> ConsentRequest:
        """The service request for the cleaned form: the boxes ticked and the words beside them."""
        data = self.cleaned_data
        texts = [EMAIL_DISCLOSURE] if data["email_marketing"] else []
        if data["sms_marketing"]:
            texts.append(SMS_DISCLOSURE)
        return ConsentRequest(
            consent=Consent.SUBSCRIBED,
            subscriptions={
                "email": {"marketing": data["email_marketing"]},
                "sms": {"marketing": data["sms_marketing"]},
            },
            email=data["email"],
            phone_number=data["phone_number"] or None,
            method=Method.FORM,
            method_detail="example signup page",
            custom_source="Example signup page",
            consent_text="\n".join(texts),
            evidence=evidence,
            recorded_by=recorded_by,
        )
