from django.core.management.base import BaseCommand, CommandError

from foundation.access.authentication import api_token_create
from foundation.access.models import Role
from foundation.errors import DomainError


class Command(BaseCommand):
    help = "Create an API client token for a role; the token is printed once and never stored."

    def add_arguments(self, parser):
        parser.add_argument("--role", required=True, choices=Role.values)
        parser.add_argument("--name", required=True)

    def handle(self, *args, role, name, **options):
        try:
            client, token = api_token_create(name=name, role=role)
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stderr.write(f"created token for {client.name} ({client.role}); it is shown only now:")
        self.stdout.write(token)
