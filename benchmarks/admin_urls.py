"""The admin, as a site mounts it (benchmarks/admin_pages.py)."""

from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
