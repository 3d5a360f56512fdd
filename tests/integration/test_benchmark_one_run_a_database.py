"""Two benchmark runs on one database at once would empty each other's send ledger mid-measure
(each run restores a reused database and empties the ledger when it starts a channel): the second
one refuses, in one sentence, while the first holds the database."""

from __future__ import annotations

import os

import pytest

from benchmarks.common import DatabaseInUse, alone_on
from benchmarks.run import main
from tests.cli import logging_kept


def test_a_second_run_on_a_database_in_use_refuses_and_the_database_is_free_again_afterwards(capsys):
    database = f"loyalty_bench_alone_{os.getpid()}_2000"
    with alone_on(database):
        with pytest.raises(DatabaseInUse, match="another benchmark run is measuring on the database"):
            with alone_on(database):
                pass
        with alone_on(f"loyalty_bench_alone_{os.getpid()}_other"):  # another database is free
            pass

        with logging_kept():  # main() sends the product's logs to this test's captured stderr
            assert main(["--members", "2000", "--quick", "--only", "audience",
                         "--database", f"loyalty_bench_alone_{os.getpid()}"]) == 2
        printed = capsys.readouterr().out
        assert f"another benchmark run is measuring on the database {database}" in " ".join(printed.split())
        assert "Traceback" not in printed

    with alone_on(database):  # released with the first run
        pass
