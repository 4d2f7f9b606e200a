"""Workflows: recording consent, pushing it to Klaviyo, reading Klaviyo back.

No request objects and no HTTP here; the backend does the talking. One module, one stage of a
one-way pipeline (docs/architecture.md): ledger → outbox → jobs → push → mirror → verify, with
``sync`` the only orchestrator and ``outbox`` the delivery state machine.
"""
