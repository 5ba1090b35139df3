from django.apps import AppConfig


class LedgerConfig(AppConfig):
    name = "foundation.ledger"
    label = "ledger"
    verbose_name = "Ledger"
