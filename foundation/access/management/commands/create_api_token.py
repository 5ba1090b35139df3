from django.core.management.base import BaseCommand, CommandError

from foundation.access.authentication import api_token_create
from foundation.access.models import Role
from foundation.errors import DomainError


class Command(BaseCommand):
    help = ("Create an API client token for a role; the token is printed once and never stored. A person's "
            "token (a DPO's console) names its user with --user; a service client (the intake web form) has none.")

    def add_arguments(self, parser):
        parser.add_argument("--role", required=True, choices=Role.values)
        parser.add_argument("--name", required=True)
        parser.add_argument("--user", help="username of the person who holds the token (an active user); "
                                           "decisions that need two DPO users count this user, not the token")

    def handle(self, *args, role, name, user, **options):
        try:
            client, token = api_token_create(name=name, role=role, user=user)
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        holder = f", held by user {user}" if user else ""
        self.stderr.write(f"created token for {client.name} ({client.role}{holder}); it is shown only now:")
        if role == Role.DPO and not user:
            self.stderr.write("note: this DPO token is bound to no user, so it cannot accept a residual risk "
                              "(two DPO users decide); give --user to bind a DPO's token to them")
        self.stdout.write(token)
