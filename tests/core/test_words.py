"""Plain plurals in summaries (issue 17: no `harness(s)`, `history(s)`)."""
from xpresso_env.admin.transfer import TransferReport
from xpresso_env.core.words import count


def test_counts_read_as_english():
    assert [count(n, "harness") for n in (0, 1, 2)] == ["0 harnesses", "1 harness", "2 harnesses"]
    assert count(3, "delivery") == "3 deliveries" and count(2, "key") == "2 keys"
    assert count(1, "history entry", "history entries") == "1 history entry"


def test_the_transfer_report_has_no_parenthesised_plurals():
    text = str(TransferReport({"group": 1, "harness": 2, "history": 3, "delivery": 0, "outbox": 1}, logs=1))
    assert text == "1 group, 2 harnesses, 3 history entries, 0 deliveries, 1 outbox entry, 1 build log"
