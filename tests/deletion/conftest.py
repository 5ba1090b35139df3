import pytest

from tests import factories


@pytest.fixture
def trained(db):
    """Nine records of three subjects (p0..p2@example.org) and a SISA model (v1) trained on all."""
    ds = factories.dataset()
    factories.import_records(ds, [{"record_key": f"r{i}", "content": f"c{i}", "email": f"p{i % 3}@example.org"}
                                  for i in range(9)])
    model = factories.registered_model(recipe="sisa")
    run, version = factories.trained_version(model, ds, [(f"r{i}", i % 2, 0) for i in range(9)])
    return dict(ds=ds, model=model, version=version)


@pytest.fixture(autouse=True)
def _local_receivers_allowed(settings):
    """The tests' webhook receivers listen on 127.0.0.1: the operator's allow-list names it here
    (deletion/webhooks.py refuses internal addresses otherwise; test_webhook_targets.py empties it)."""
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]
