"""The ledger's append function and its guards, in SQL so that an append is one statement."""

from django.db import migrations

FORWARD = r"""
INSERT INTO deletion_ledgerhead (id, seq, hash) VALUES (1, 0, '\x'::bytea || decode(repeat('00', 32), 'hex'));

CREATE FUNCTION ledger_append(payload text) RETURNS TABLE(seq bigint, hash bytea) AS $$
DECLARE
    head_seq bigint;
    head_hash bytea;
    new_hash bytea;
BEGIN
    SELECT h.seq, h.hash INTO head_seq, head_hash FROM deletion_ledgerhead h WHERE h.id = 1 FOR UPDATE;
    new_hash := sha256(head_hash || convert_to(payload, 'UTF8'));
    INSERT INTO deletion_ledgerevent (seq, prev_hash, hash, payload, created_at)
        VALUES (head_seq + 1, head_hash, new_hash, payload, now());
    UPDATE deletion_ledgerhead SET seq = head_seq + 1, hash = new_hash WHERE id = 1;
    RETURN QUERY SELECT head_seq + 1, new_hash;
END
$$ LANGUAGE plpgsql;

CREATE FUNCTION ledger_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % refused', TG_OP;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER ledger_no_update_delete BEFORE UPDATE OR DELETE ON deletion_ledgerevent
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON deletion_ledgerevent
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
REVOKE UPDATE, DELETE, TRUNCATE ON deletion_ledgerevent FROM PUBLIC;
"""

BACKWARD = """
DROP TRIGGER IF EXISTS ledger_no_truncate ON deletion_ledgerevent;
DROP TRIGGER IF EXISTS ledger_no_update_delete ON deletion_ledgerevent;
DROP FUNCTION IF EXISTS ledger_refuse_change();
DROP FUNCTION IF EXISTS ledger_append(text);
DELETE FROM deletion_ledgerhead;
"""


class Migration(migrations.Migration):
    dependencies = [("deletion", "0002_ledger")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
