import sys

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError

from foundation.access.roles import ROLE_PERMISSIONS, roles_setup


class Command(BaseCommand):
    help = ("Create a staff user in one role's group (dpo, ml_engineer or auditor), the groups set up first: a "
            "person who signs in to the admin and may hold API tokens (create_api_token --user). Without "
            "--password-stdin the user has no usable password until 'manage.py changepassword'.")
    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        parser.add_argument("--username", required=True)
        parser.add_argument("--role", required=True, choices=[str(r) for r in ROLE_PERMISSIONS])
        parser.add_argument("--email", default="")
        parser.add_argument("--password-stdin", action="store_true",
                            help="read the password from standard input (one line)")

    def handle(self, *args, username, role, email, password_stdin, **options):
        users = get_user_model()
        if users.objects.filter(**{users.USERNAME_FIELD: username}).exists():
            raise CommandError(f"user {username!r} exists already: add them to the {role} group in the admin")
        password = options.get("stdin", sys.stdin).readline().rstrip("\n") if password_stdin else None
        if password_stdin and not password:
            raise CommandError("--password-stdin read an empty password")
        roles_setup()  # the role's group with exactly its permissions
        user = users.objects.create_user(username=username, email=email, password=password, is_staff=True)
        user.groups.add(Group.objects.get(name=role))
        self.stdout.write(f"created staff user {username} in the {role} group"
                          + ("" if password else f" (no password yet: manage.py changepassword {username})"))
