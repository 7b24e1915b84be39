"""python -m src.report's bad input: one error line naming the option and the fix, exit 2, no traceback."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from src.report.__main__ import main


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    uri = f"sqlite:///{tmp_path_factory.mktemp('report-cli')}/mlflow.db"
    MlflowClient(tracking_uri=uri).create_experiment("prunesweep")
    return uri


def exit_code(argv: list[str]) -> int:
    """main's return value, or the code of the SystemExit its option parser raised."""
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code)


@pytest.mark.parametrize("args, says", [
    (["--sweep-id", "xyz"], "--sweep-id 'xyz' is not a sweep id"),
    (["--run-ids", "abc,0123456789abcdef0123456789abcdef"], "--run-ids: 'abc' is not a run id"),
    (["--filter", "params.lr="], "--filter 'params.lr=': MLflow cannot read it"),
    (["--sweep", "0123456789ab"], "unrecognized arguments: --sweep"),  # no abbreviation of --sweep-id
])
def test_bad_selection_is_one_line_and_exit_2(store, capsys, args, says):
    assert exit_code([*args, "--tracking-uri", store]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and says in err and "Traceback" not in err, err


def test_a_selection_that_matches_nothing_says_what_to_check(store, capsys):
    assert main(["--run-ids", "0123456789abcdef0123456789abcdef", "--tracking-uri", store]) == 1
    assert "none of --run-ids is a finished prune run" in capsys.readouterr().err
    assert main(["--filter", "params.lr = '7'", "--tracking-uri", store]) == 1
    assert "no finished prune run matches --filter" in capsys.readouterr().err
