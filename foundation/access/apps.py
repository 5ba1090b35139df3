from django.apps import AppConfig


class AccessConfig(AppConfig):
    name = "foundation.access"
    label = "access"
    verbose_name = "API clients and roles"
