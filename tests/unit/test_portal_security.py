"""The portal's sessions, log-in limits and one-time links, in-process."""

import threading
from pathlib import Path

from services.portal.accounts import Accounts, MemoryAccounts, SqliteAccounts


def test_a_set_password_link_works_once_even_used_twice_at_the_same_time(
        tmp_path: Path) -> None:
    """Two browsers (two connections to the database) send the same link's form at once:
    one password is set, the other is refused."""
    for store in (MemoryAccounts(), SqliteAccounts(tmp_path / "accounts.db")):
        accounts = Accounts(store)
        token = accounts.create("fam-1", "parent@example.org")
        start = threading.Barrier(2)
        results: dict[str, object] = {}

        def use(password: str, accounts: Accounts = accounts, token: str = token,
                start: threading.Barrier = start,
                results: dict[str, object] = results) -> None:
            start.wait()
            results[password] = accounts.set_password_with_link(token, password)

        threads = [threading.Thread(target=use, args=(p,))
                   for p in ("premier mot de passe", "second mot de passe")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        won = [p for p, account in results.items() if account is not None]
        assert len(won) == 1, results
        [lost] = set(results) - set(won)
        assert accounts.authenticate("parent@example.org", won[0]) is not None
        assert accounts.authenticate("parent@example.org", lost) is None
