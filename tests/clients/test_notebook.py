"""abacus_client.notebook against a live server: results and exports load into pandas in one
call each, equal to what the server's own export code writes, and errors carry abacus's message."""

import pytest
from abacus_client.notebook import AbacusApiError, Notebook

from experiments.services import user_token_create
from tests.analysis.test_exports import export_bytes, read, seed_results

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def notebook(live_server, admin_user):
    return Notebook(live_server.url, token=user_token_create(user=admin_user).token)


@pytest.fixture
def history(project):
    return seed_results(project, looks=2, units=200)


def test_results_is_the_latest_table_with_the_snapshot_in_attrs(notebook, project, history):
    frame = notebook.results("shop", history.key)
    assert set(frame["metric"]) == {"purchase", "errors", "revenue"}
    assert (frame["variant"] == "treatment").all()
    assert frame.attrs["experiment"] == history.key
    assert frame.attrs["recommendation"]["action"] in {"keep", "extend", "rollback"}
    assert frame["lift_rel"].notna().all()
    assert "details.method" in frame  # nested objects flattened, dotted


def test_export_equals_the_servers_own_parquet(notebook, project, history):
    """Same rows, columns and dtypes as export_stream writes (the table of docs/exports.md)."""
    frame = notebook.export("shop", experiment=history.key)
    expected = read("parquet", export_bytes(project, "parquet"))
    assert list(frame.columns) == list(expected.columns)
    assert frame.shape == expected.shape == (2 * 3 * 2, len(expected.columns))
    assert frame["computed_at"].dtype == expected["computed_at"].dtype
    assert frame[["metric", "variant", "n"]].equals(expected[["metric", "variant", "n"]])


def test_export_filters_pass_through(notebook, project, history):
    latest = notebook.export("shop", latest=True)
    assert latest["snapshot_id"].nunique() == 1
    looks = notebook.export("shop", experiment=[history.key], history="looks")
    assert looks["look_number"].notna().all()


def test_errors_carry_the_message_naming_the_parameter(notebook, project, history):
    with pytest.raises(AbacusApiError) as raised:
        notebook.export("shop", experiment=history.key, history="sometimes")
    assert raised.value.status == 400 and "history" in str(raised.value)
    with pytest.raises(AbacusApiError) as missing:
        notebook.results("shop", "no-such-experiment")
    assert missing.value.status == 404
    with pytest.raises(TypeError, match="unknown export filter"):
        notebook.export("shop", colour="blue")


def test_a_bad_token_is_refused(live_server, project, history):
    with pytest.raises(AbacusApiError) as raised:
        Notebook(live_server.url, token="nope").results("shop", history.key)
    assert raised.value.status == 401
