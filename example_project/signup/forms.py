from django import forms

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
