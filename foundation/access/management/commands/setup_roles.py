from django.core.management.base import BaseCommand

from foundation.access.roles import roles_setup


class Command(BaseCommand):
    help = ("Create or reset the staff groups dpo, ml_engineer and auditor with their model permissions "
            "(a group's permissions are set to exactly its role's). Add staff users to one group each.")

    def handle(self, *args, **options):
        for group, permissions in roles_setup().items():
            self.stdout.write(f"{group}: {len(permissions)} permissions")
            for permission in permissions:
                self.stdout.write(f"  {permission}")
