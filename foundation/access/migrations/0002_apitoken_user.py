"""An API token may be bound to the person who holds it (a nullable foreign key to the user): the
tokens that exist stay unbound, as service clients, until a token bound to a user replaces them."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("access", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="apitoken",
            name="user",
            field=models.ForeignKey(blank=True, help_text="The person who holds this token; empty for a service client.",
                                    null=True, on_delete=django.db.models.deletion.PROTECT,
                                    related_name="api_tokens", to=settings.AUTH_USER_MODEL),
        ),
    ]
