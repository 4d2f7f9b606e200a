from django.apps import AppConfig


class SignupConfig(AppConfig):
    name = "example_project.signup"
    label = "signup"
