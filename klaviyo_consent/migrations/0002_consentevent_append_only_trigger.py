"""The database itself refuses to change a consent event, whoever connects to it.

PostgreSQL refuses UPDATE and DELETE (test flushes use TRUNCATE, which row triggers do not see);
SQLite refuses UPDATE (Django's flush deletes rows there). Other databases rely on the ORM guard.
"""

from django.db import migrations

TABLE = "klaviyo_consent_consentevent"

POSTGRES_UP = f"""
CREATE OR REPLACE FUNCTION klaviyo_consent_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'consent events are append-only: % on {TABLE} refused', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER klaviyo_consent_append_only BEFORE UPDATE OR DELETE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION klaviyo_consent_refuse_change();
"""
POSTGRES_DOWN = f"""
DROP TRIGGER IF EXISTS klaviyo_consent_append_only ON {TABLE};
DROP FUNCTION IF EXISTS klaviyo_consent_refuse_change();
"""
SQLITE_UP = f"""
CREATE TRIGGER klaviyo_consent_append_only BEFORE UPDATE ON {TABLE}
BEGIN SELECT RAISE(ABORT, 'consent events are append-only: UPDATE on {TABLE} refused'); END;
"""
SQLITE_DOWN = "DROP TRIGGER IF EXISTS klaviyo_consent_append_only;"


def _run(sql_by_vendor):
    def run(apps, schema_editor):
        sql = sql_by_vendor.get(schema_editor.connection.vendor)
        if sql:
            schema_editor.execute(sql, params=None)

    return run


class Migration(migrations.Migration):
    dependencies = [("klaviyo_consent", "0001_initial")]

    operations = [
        migrations.RunPython(
            _run({"postgresql": POSTGRES_UP, "sqlite": SQLITE_UP}),
            _run({"postgresql": POSTGRES_DOWN, "sqlite": SQLITE_DOWN}),
        )
    ]
