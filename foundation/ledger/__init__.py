"""The tamper-evident ledger (a Django app, label ``ledger``): written by every layer (request
transitions, reports, the garbage collector), so it stands on the ground floor. Its tables keep
the names they were created with (``deletion_ledgerevent``, ``deletion_ledgerhead``)."""
