"""How notices become messages: Markdown-style body with the HTML Matrix clients show,
credentials redacted on the way out, bounded size; the rate limit, the grouping of
pending notices (a message resent as it was, an approval alone) and what a failed
send means."""

from __future__ import annotations

from reconciler.notify import format, pacing
from reconciler.notify.notices import Notice
from reconciler.store import OutboxNotice


def _notice(title: str, *lines: str, state: str = "opened") -> Notice:
    return Notice("prod/web/drift", "drift", state, "prod", "web", title, lines)  # type: ignore[arg-type]


def test_a_message_has_a_plain_body_and_the_same_in_html() -> None:
    content = format.message([_notice("prod/web: <b>drift</b> opened", "a & b")], {})
    assert content["msgtype"] == "m.notice"
    assert content["format"] == "org.matrix.custom.html"
    assert content["body"] == "🔴 **prod/web: <b>drift</b> opened**\n- a & b"
    assert content["formatted_body"] == (
        "<p>🔴 <strong>prod/web: &lt;b&gt;drift&lt;/b&gt; opened</strong></p>"
        "<ul><li>a &amp; b</li></ul>"
    )


def test_a_message_carrying_an_approval_says_how_to_give_it() -> None:
    content = format.message(
        [_notice("held")], {"prod/web/drift": ("k3m9x2ab", "2026-12-02T08:00:00Z")}
    )
    assert "reply `approve k3m9x2ab` or react ✅ (until 2026-12-02T08:00:00Z)" in content["body"]
    assert "<code>approve k3m9x2ab</code>" in content["formatted_body"]


def test_credentials_in_a_notice_are_redacted_on_the_way_out() -> None:
    line = "error: password=hunter2-not-for-chat Authorization: Bearer abc.def.ghi"
    content = format.message([_notice("failed", line)], {})
    for text in (content["body"], content["formatted_body"]):
        assert "hunter2" not in text and "abc.def.ghi" not in text


def test_a_huge_message_is_cut_to_a_bound() -> None:
    lines = [f"line {i} " + "x" * 150 for i in range(100)]
    content = format.message([_notice("big", *lines)] * 10, {})
    assert len(content["body"]) <= format.MAX_BODY
    assert len(content["formatted_body"]) <= format.MAX_BODY * 2 + 20


def test_the_rate_limit_lets_n_messages_a_minute_through() -> None:
    limit = pacing.RateLimit(2)
    assert limit.wait_s(0.0) == 0.0
    limit.sent(0.0)
    limit.sent(10.0)
    assert limit.wait_s(20.0) == 40.0
    assert limit.wait_s(60.0) == 0.0


def _pending(i: int, approval: str | None = None, txn: str | None = None) -> OutboxNotice:
    return OutboxNotice(f"k{i}", 1, {}, approval, i, "", txn)


def test_pending_notices_group_into_messages() -> None:
    # A message grouped before a restart or a failure goes again as it was.
    pending = [_pending(1), _pending(2, txn="t1"), _pending(3, txn="t1")]
    assert [n.id for n in pacing.next_message(pending)] == [2, 3]
    # An approval goes alone, so a reaction to its message names one decision.
    assert [n.id for n in pacing.next_message([_pending(1, "a1"), _pending(2)])] == [1]
    # Otherwise the oldest, up to a message's worth, the approvals left for later.
    many = [_pending(i) for i in range(1, 30)] + [_pending(30, "a2")]
    assert [n.id for n in pacing.next_message(many)] == list(range(1, format.MAX_NOTICES + 1))
    assert pacing.next_message([]) == []


def test_a_notice_that_will_ask_for_a_decision_goes_alone_before_its_approval_exists() -> None:
    # Approvals are offered when the message is sent: the notice asks before it carries one.
    asking = OutboxNotice("k1", 2, {"approval_action": "prune"}, None, 1)
    assert [n.id for n in pacing.next_message([asking, _pending(2)])] == [1]
    assert [n.id for n in pacing.next_message([_pending(2), asking, _pending(3)])] == [2, 3]


def test_only_a_message_refused_for_good_is_dropped() -> None:
    assert pacing.after_failure(None, None) == pacing.Verdict("retry", False)
    assert pacing.after_failure(502, None) == pacing.Verdict("retry", False)
    assert pacing.after_failure(429, 2.5) == pacing.Verdict("retry", True, 2.5)
    assert pacing.after_failure(403, None) == pacing.Verdict("retry", True)
    assert pacing.after_failure(413, None) == pacing.Verdict("drop", True)
