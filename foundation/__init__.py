"""The ground floor: what every app may use and which imports none of them.

errors (the domain's one error type), env (strict settings from the environment), registry (the
strict name -> entry registry behind every extension point), strict_json (one canonical JSON,
fields given once, JSON-able values), files (one atomic write), locks (PostgreSQL advisory locks,
which hold across hosts), data_keys (what a keystore offers), and two small Django apps every
layer writes to or authenticates with: ``foundation.ledger`` (the hash-chained ledger) and
``foundation.access`` (API tokens, roles, role permissions).
"""
