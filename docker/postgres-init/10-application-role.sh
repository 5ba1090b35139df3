#!/bin/sh
# Runs once, when the postgres container initialises its volume: the login role the web, worker
# and beat processes use. Its group, deletion_platform_app, is granted what the application needs
# by the migrations (deletion/migrations/0012_application_role.py) — on the ledger only SELECT and
# INSERT. Migrations run as POSTGRES_USER, the schema's owner.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v app_password="$APP_DB_PASSWORD" <<'SQL'
CREATE ROLE deletion_platform_app NOLOGIN;
CREATE ROLE deletion_app LOGIN PASSWORD :'app_password' IN ROLE deletion_platform_app;
SQL
