from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("klaviyo_consent", "0004_verdicts"),
    ]

    operations = [
        migrations.AddField(
            model_name="delivery",
            name="deferrals",
            field=models.PositiveIntegerField(
                default=0,
                help_text="Times Klaviyo made this row wait without judging it (429s, refusals "
                "of the request itself): they grow the backoff but never spend attempts.",
            ),
        ),
    ]
