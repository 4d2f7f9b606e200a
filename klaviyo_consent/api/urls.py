"""Mount with ``path("api/consent/", include("klaviyo_consent.api.urls"))``."""

from django.urls import path

from klaviyo_consent.api import erasure, lists, proofs, root, views
from klaviyo_consent.api.export import EventExportView
from klaviyo_consent.api.prior_consent import PriorConsentCheckView
from klaviyo_consent.api.public import PublicSubscribeView
from klaviyo_consent.api.webhooks import KlaviyoWebhookView

app_name = "klaviyo_consent"

urlpatterns = [
    path("subscribe/", views.SubscribeView.as_view(), name="subscribe"),
    path("unsubscribe/", views.UnsubscribeView.as_view(), name="unsubscribe"),
    path("suppress/", views.SuppressView.as_view(), name="suppress"),
    path("unsuppress/", views.UnsuppressView.as_view(), name="unsuppress"),
    path("profiles/", views.ProfileList.as_view(), name="profile-list"),
    path("profiles/<int:pk>/", views.ProfileDetail.as_view(), name="profile-detail"),
    path(
        "profiles/<int:pk>/phone-number/",
        views.PhoneNumberChangeView.as_view(),
        name="profile-phone-number",
    ),
    path("profiles/<int:pk>/merge/", views.MergeView.as_view(), name="profile-merge"),
    path("profiles/<int:pk>/erase/", erasure.EraseProfileView.as_view(), name="profile-erase"),
    path("events/", views.EventList.as_view(), name="event-list"),
    path("events/export/", EventExportView.as_view(), name="event-export"),
    path("check/", PriorConsentCheckView.as_view(), name="check"),
    path("checkpoints/", proofs.CheckpointListView.as_view(), name="checkpoint-list"),
    path("checkpoints/latest/", proofs.LatestCheckpointView.as_view(), name="checkpoint-latest"),
    path("events/<int:pk>/receipt/", proofs.EventReceiptView.as_view(), name="event-receipt"),
    path(
        "profiles/<int:pk>/receipts/",
        proofs.ProfileReceiptsView.as_view(),
        name="profile-receipts",
    ),
    path("webhooks/klaviyo/", KlaviyoWebhookView.as_view(), name="klaviyo-webhook"),
    path("lists/", lists.ListIndex.as_view(), name="list-list"),
    path("lists/<str:list_id>/", lists.ListDetail.as_view(), name="list-detail"),
    path("lists/<str:list_id>/members/", lists.ListMembersView.as_view(), name="list-members"),
    path("public/subscribe/", PublicSubscribeView.as_view(), name="public-subscribe"),
]

# The schema, its docs page and the API root (which lists each route above without a parameter).
urlpatterns += [
    path("schema/", root.SchemaView.as_view(), name="schema"),
    path("docs/", root.DocsView.as_view(), name="docs"),
]
urlpatterns.append(path("", root.ApiRoot.as_view(routes=tuple(urlpatterns)), name="api-root"))
