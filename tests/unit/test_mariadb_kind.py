"""The MySQL/MariaDB dataset kind's pure parts: its stack entry, its registration and place in a plan, the plan's
warnings, teardown lines, server ids. Its behaviour against real servers: tests/integration/test_mariadb_lab.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from liferaft.datasets import Dataset
from liferaft.datasets.base import kind_of
from liferaft.datasets.mariadb import server_lines
from liferaft.datasets.mariadb_access import server_id
from liferaft.datasets.registry import datasets
from liferaft.errors import InvalidInput
from liferaft.movers.mysql import MyConn, ServerInfo, TableInfo, check_supported, warnings_for
from liferaft.stack import load_stack
from tests.unit.test_dataset_kinds import STACK


def _stack(tmp_path: Path, entry: str) -> Path:
    (tmp_path / "key").write_text("k")
    p = tmp_path / "stack.yaml"
    p.write_text(STACK + "data:\n  mysql:\n    shop:\n" + entry)
    return p


def test_stack_entry_is_a_dataset_of_the_mysql_kind(tmp_path: Path) -> None:
    stack = load_stack(_stack(tmp_path, "      name: shop\n      user: shopapp\n      password: file:pw\n"))
    (ds,) = [d for d in datasets(stack) if d.kind == "mysql"]
    kind = kind_of(ds)
    assert ds.key == "shop" and ds.spec.port == 3306
    assert f"{kind.seed_verb}-{ds.key}" == "mysql-shop" and kind.group == "mysql" and kind.freezes_source
    assert kind.target_playbooks(stack, [ds]) == ["mariadb.yml"] and kind.ports(ds) == (3306,)


def test_inline_password_and_bad_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as e:
        load_stack(_stack(tmp_path, "      name: shop\n      user: shopapp\n      password: hunter2hunter2\n"))
    assert "hunter2" not in str(e.value)
    with pytest.raises(InvalidInput):
        load_stack(_stack(tmp_path, "      name: 'shop; drop'\n      user: u\n      password: file:pw\n"))


def test_plan_warnings_name_tables_without_primary_key_and_myisam() -> None:
    found = [TableInfo("orders", "InnoDB", 10, 100, True), TableInfo("audit", "InnoDB", 5, 50, False),
             TableInfo("legacy", "MyISAM", 5, 50, True)]
    text = " ".join(warnings_for(found))
    assert "without a primary key: audit" in text and "legacy (MyISAM)" in text and "orders" not in text
    assert warnings_for(found[:1]) == []


def test_mysql_and_old_mariadb_are_refused() -> None:
    from liferaft.errors import RunFailed

    check_supported(ServerInfo("10.11.19-MariaDB-0+deb12u1-log", True, True, 1, "ROW"), "h:3306")
    with pytest.raises(RunFailed, match="MySQL 8.0"):
        check_supported(ServerInfo("8.0.36", False, True, 1, "ROW"), "h:3306")
    with pytest.raises(RunFailed, match="10.5 or later"):
        check_supported(ServerInfo("10.3.39-MariaDB", True, True, 1, "ROW"), "h:3306")


def test_teardown_removes_the_instance_and_server_ids_differ() -> None:
    text = "\n".join(server_lines(3306))
    assert "rm -rf /var/lib/liferaft-mariadb" in text and "liferaft-3306.sock" in text and "$sd" in text
    assert server_id("10.213.7.11") != server_id("10.213.7.12") and server_id("10.0.0.1") > 0


def test_password_not_in_repr() -> None:
    assert "s3cret" not in repr(MyConn("h", 3306, "u", "s3cret", "db"))
    assert Dataset("mysql", "shop", None).id == "shop"


def test_an_application_account_that_writes_through_read_only_is_warned_of() -> None:
    """MariaDB has no super_read_only: the freeze's read_only stops every account but those holding READ ONLY ADMIN
    (in ALL PRIVILEGES ON *.*; SUPER before 10.11). The plan warns of such an application account."""
    from liferaft.movers.mysql import writes_through_read_only

    v1011 = ServerInfo("10.11.19-MariaDB-0+deb12u1-log", True, True, 1, "ROW")
    v106 = ServerInfo("10.6.18-MariaDB", True, True, 1, "ROW")
    usage = "GRANT USAGE ON *.* TO `shopapp`@`%` IDENTIFIED BY PASSWORD '*ABC'"
    on_db = "GRANT ALL PRIVILEGES ON `shop`.* TO `shopapp`@`%`"
    assert writes_through_read_only([usage, on_db], v1011) is None
    everything = "GRANT ALL PRIVILEGES ON *.* TO `shopapp`@`%` IDENTIFIED BY PASSWORD '*ABC' WITH GRANT OPTION"
    text = writes_through_read_only([everything], v1011)
    assert text and "ALL PRIVILEGES" in text and "read_only" in text and "*ABC" not in text
    assert writes_through_read_only(["GRANT SELECT, READ_ONLY ADMIN ON *.* TO `u`@`%`", on_db], v1011)
    assert writes_through_read_only(["GRANT SELECT, READ ONLY ADMIN ON *.* TO `u`@`%`"], v1011)
    assert writes_through_read_only(["GRANT SUPER ON *.* TO `u`@`%`"], v1011) is None  # 10.11: SUPER is refused
    assert writes_through_read_only(["GRANT SUPER ON *.* TO `u`@`%`"], v106)
