"""Workflows: recording consent, pushing it to Klaviyo, reading Klaviyo back.

No request objects and no HTTP here; the backend does the talking.
"""
