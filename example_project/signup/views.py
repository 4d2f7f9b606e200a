"""The demo's signup page: the drop-in ``{% consent_form %}`` on a page of the shop's own."""

from django.shortcuts import render


def signup(request):
    return render(request, "signup/signup.html")
