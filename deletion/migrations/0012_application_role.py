"""The application's database role: what the web and worker processes may do.

They connect as a login role that is a member of ``deletion_platform_app``; migrations run as the
schema's owner. The group gets SELECT, INSERT, UPDATE and DELETE on every table (now and, by
default privileges, on the tables later migrations create), and on the ledger only SELECT and
INSERT: an edit or a removal of a ledger row by the application is refused by privilege before the
trigger (0003) is reached, and TRUNCATE (which fires no row trigger) is refused the same way.

The group is created when missing, which needs CREATEROLE; a deployment whose migration role
lacks it creates ``deletion_platform_app`` (NOLOGIN) beforehand.
"""

from django.db import migrations

GROUP = "deletion_platform_app"

FORWARD = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{GROUP}') THEN
        BEGIN
            CREATE ROLE {GROUP} NOLOGIN;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE EXCEPTION 'role {GROUP} does not exist and this role may not create it'
                USING HINT = 'create it once as an administrator: CREATE ROLE {GROUP} NOLOGIN';
        END;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA public TO {GROUP};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {GROUP};
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {GROUP};
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {GROUP};
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {GROUP};
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {GROUP};
REVOKE UPDATE, DELETE, TRUNCATE ON deletion_ledgerevent FROM {GROUP};
"""

BACKWARD = f"""
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM {GROUP};
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON SEQUENCES FROM {GROUP};
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {GROUP};
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {GROUP};
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM {GROUP};
REVOKE USAGE ON SCHEMA public FROM {GROUP};
"""


class Migration(migrations.Migration):
    dependencies = [
        ("deletion", "0011_alter_deletionrequest_jurisdiction"),
        # Every app's tables exist before the grants (later ones get them by default privileges).
        ("models_registry", "0005_membership_blocks"),
    ]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
