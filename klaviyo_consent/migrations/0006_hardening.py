"""Hardening: a recording user can be deleted; SQLite refuses DELETE of a consent event too.

``recorded_by`` loses its database constraint (``DO_NOTHING``): deleting a user no longer tries
to SET_NULL an append-only row. ``recorded_by_label`` keeps the username, filled here for the
existing rows with the append-only trigger briefly off (PostgreSQL) or not yet back (SQLite,
where altering the column rebuilds the table and drops its triggers), then the triggers are
(re)made: SQLite now refuses UPDATE and DELETE, as PostgreSQL does.
"""

import django.db.models.deletion
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import migrations, models

TABLE = "klaviyo_consent_consentevent"

BACKFILL = f"""
UPDATE {TABLE} SET recorded_by_label = COALESCE(
    (SELECT u.{{username}} FROM {{users}} u WHERE u.{{pk}} = {TABLE}.recorded_by_id), ''
) WHERE recorded_by_id IS NOT NULL
"""
SQLITE_TRIGGERS = [
    "DROP TRIGGER IF EXISTS klaviyo_consent_append_only",
    "DROP TRIGGER IF EXISTS klaviyo_consent_append_only_delete",
    f"""CREATE TRIGGER klaviyo_consent_append_only BEFORE UPDATE ON {TABLE}
BEGIN SELECT RAISE(ABORT, 'consent events are append-only: UPDATE on {TABLE} refused'); END""",
    f"""CREATE TRIGGER klaviyo_consent_append_only_delete BEFORE DELETE ON {TABLE}
BEGIN SELECT RAISE(ABORT, 'consent events are append-only: DELETE on {TABLE} refused'); END""",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS klaviyo_consent_append_only_delete",
]


def _backfill_sql(apps, schema_editor):
    User = apps.get_model(settings.AUTH_USER_MODEL)
    # Historical models lack USERNAME_FIELD: read it from the installed user model.
    username_field = get_user_model().USERNAME_FIELD
    quote = schema_editor.quote_name
    return BACKFILL.format(
        username=quote(User._meta.get_field(username_field).column),
        users=quote(User._meta.db_table),
        pk=quote(User._meta.pk.column),
    )


def forwards(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE {TABLE} DISABLE TRIGGER klaviyo_consent_append_only")
        schema_editor.execute(_backfill_sql(apps, schema_editor), params=None)
        schema_editor.execute(f"ALTER TABLE {TABLE} ENABLE TRIGGER klaviyo_consent_append_only")
    elif vendor == "sqlite":
        schema_editor.execute("DROP TRIGGER IF EXISTS klaviyo_consent_append_only")
        schema_editor.execute(_backfill_sql(apps, schema_editor), params=None)
        for sql in SQLITE_TRIGGERS:
            schema_editor.execute(sql, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for sql in SQLITE_DOWN:
            schema_editor.execute(sql, params=None)


class Migration(migrations.Migration):
    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("klaviyo_consent", "0005_delivery"),
    ]

    operations = [
        migrations.AlterField(
            model_name="consentevent",
            name="recorded_by",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddField(
            model_name="consentevent",
            name="recorded_by_label",
            field=models.CharField(
                blank=True,
                help_text="The recording user's username when the event was recorded.",
                max_length=150,
                verbose_name="recorded by (username)",
            ),
        ),
        migrations.RunPython(forwards, backwards),
    ]
