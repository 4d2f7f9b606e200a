"""An identity event's ``reason`` (free text staff wrote) moves to its erasable row.

It may name the person, and an identity event never changes: so, like the old and new
values, it lives in ``IdentityPersonalData``, which an erasure blanks. The column is added,
the existing reasons copied by one UPDATE, then the event's column dropped (SQLite: ALTER
TABLE DROP COLUMN, no rebuild). The consent ledger's append-only triggers are made again at
the end on SQLite all the same, as migration 0013 does.
"""

from importlib import import_module

from django.db import migrations, models

COPY = """
UPDATE klaviyo_consent_identitypersonaldata SET reason = (
    SELECT e.reason FROM klaviyo_consent_identityevent e
    WHERE e.id = klaviyo_consent_identitypersonaldata.event_id
)
"""
COPY_BACK = """
UPDATE klaviyo_consent_identityevent SET reason = (
    SELECT d.reason FROM klaviyo_consent_identitypersonaldata d
    WHERE d.event_id = klaviyo_consent_identityevent.id
)
"""


def copy_reasons(apps, schema_editor):
    schema_editor.execute(COPY, params=None)


def copy_back(apps, schema_editor):
    schema_editor.execute(COPY_BACK, params=None)


def triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        erasure = import_module("klaviyo_consent.migrations.0013_erasure")
        for sql in erasure.SQLITE_TRIGGERS:
            schema_editor.execute(sql, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("klaviyo_consent", "0014_delivery_history"),
    ]

    operations = [
        migrations.AddField(
            model_name="identitypersonaldata",
            name="reason",
            field=models.TextField(blank=True, null=True),
        ),
        migrations.RunPython(copy_reasons, copy_back),
        migrations.RemoveField(
            model_name="identityevent",
            name="reason",
        ),
        migrations.RunPython(triggers, triggers),
    ]
