"""The fake Klaviyo for unittest users: ``klaviyo_fake()`` and ``KlaviyoFakeMixin`` in TestCase."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import TestCase
from rest_framework.test import APIClient

from klaviyo_consent.backends import get_backend
from klaviyo_consent.testing.fake import FakeKlaviyo, get_default_fake
from klaviyo_consent.testing.fixtures import FAKE_BACKEND, KlaviyoFakeMixin, klaviyo_fake
from tests.helpers import SUBSCRIBE, body

HTTP_BACKEND = {
    "BACKEND": "klaviyo_consent.backends.http.KlaviyoBackend",
    "API_KEY": "pk_live_never_used",
    "VERIFY_DELAY": 0,
    "VERIFY_ATTEMPTS": 1,
}


def staff_client() -> APIClient:
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("staff", password="pw"))
    return client


class KlaviyoFakeMixinTests(KlaviyoFakeMixin, TestCase):
    klaviyo_fake_options = {"default_opt_in_process": "single_opt_in"}

    def setUp(self) -> None:
        super().setUp()
        self.klaviyo_fake.add_list("Single", "Newsletter", "single_opt_in")

    def test_a_signup_in_a_test_case_reaches_the_fake_klaviyo(self) -> None:
        with self.captureOnCommitCallbacks(execute=True):
            response = staff_client().post(SUBSCRIBE, body(), format="json")

        self.assertEqual(response.status_code, 201, response.content)
        in_klaviyo = self.klaviyo_fake.get_profile(email="ada@example.com")
        self.assertEqual(in_klaviyo["subscriptions"]["email"]["marketing"]["consent"], "SUBSCRIBED")
        self.assertEqual(self.klaviyo_fake.counts["bulk_subscribe_profiles"], 1)
        self.assertEqual(self.klaviyo_fake.list_members("Single"), [in_klaviyo["id"]])

    def test_the_options_configure_the_account_and_the_backend_answers_from_it(self) -> None:
        self.assertEqual(self.klaviyo_fake.default_opt_in_process, "single_opt_in")
        self.assertFalse(self.klaviyo_fake.enforce_rate_limits)
        self.assertIs(get_default_fake(), self.klaviyo_fake)
        self.assertEqual(settings.KLAVIYO_CONSENT["BACKEND"], FAKE_BACKEND)


class KlaviyoFakeContextManagerTests(TestCase):
    def test_the_block_swaps_the_http_backend_for_the_fake_and_restores_it(self) -> None:
        with self.settings(KLAVIYO_CONSENT=HTTP_BACKEND):
            before = get_default_fake()
            with klaviyo_fake() as fake:
                fake.add_list("Single", "Newsletter", "single_opt_in")
                with self.captureOnCommitCallbacks(execute=True):
                    response = staff_client().post(SUBSCRIBE, body(), format="json")
                self.assertEqual(response.status_code, 201, response.content)
                self.assertEqual(settings.KLAVIYO_CONSENT["API_KEY"], "pk_live_never_used")
                self.assertEqual(type(get_backend()).__name__, "FakeKlaviyoBackend")

            self.assertEqual(fake.counts["bulk_subscribe_profiles"], 1)
            self.assertEqual(settings.KLAVIYO_CONSENT, HTTP_BACKEND)
            self.assertEqual(type(get_backend()).__name__, "KlaviyoBackend")
            self.assertIs(get_default_fake(), before)

    def test_a_fake_built_by_the_caller_is_the_one_installed(self) -> None:
        mine = FakeKlaviyo(sms_countries=["GB"], enforce_rate_limits=False)
        with klaviyo_fake(mine) as fake:
            self.assertIs(fake, mine)
            self.assertIs(get_default_fake(), mine)

    def test_a_fake_and_options_together_are_refused(self) -> None:
        with self.assertRaises(TypeError), klaviyo_fake(FakeKlaviyo(), sms_enabled=False):
            pass
