"""A/B variants end to end (a tick records each member's variant and sends its message; preview,
simulate and the report show them) and proofs (the real channel, marked, nothing in the ledger),
on PostgreSQL with a real SMTP server."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import func, select

from campaigns.holdout import is_held_out
from campaigns.loader import load_campaign_file
from campaigns.variants import variant_name
from models.audit import AuditEntry
from models.db import transaction
from models.delivery import Delivery
from models.member import Member
from models.order import Order
from models.points import PointEntry
from services.proportions import difference_interval
from tests.conftest import PUBLIC_URL, REPO_ROOT
from tests.integration.test_support_commands import loyalty, member_id, one_sentence, row
from tests.support.members import add_members, make_member

TICK = "2027-06-15T08:00:00Z"  # 10:00 in Paris, the members' birthday
SENT_AT = datetime(2027, 6, 15, 8, tzinfo=UTC)

EXPERIMENT = """
experiment:
  name: gift_size
  variants:
    - name: control
      share: 0.5
    - name: bigger
      share: 0.5
      subject:
        en: "A bigger gift for you, {{ member.first_name }}: {{ reward.points | number }} points"
        fr: "Un plus gros cadeau, {{ member.first_name }} : {{ reward.points | number }} points"
      reward:
        points_by_tier: {bronze: 300, silver: 500, gold: 1000}
"""


def birthday_with_variants(tmp_path: Path, holdout: str = "0.2") -> dict:
    """The birthday gift with a holdout and two variants (the second: another subject, a bigger gift)."""
    definitions = tmp_path / "definitions"
    definitions.mkdir(exist_ok=True)
    text = (REPO_ROOT / "campaigns" / "definitions" / "birthday.yaml").read_text()
    (definitions / "birthday.yaml").write_text(text.replace("holdout: 0", f"holdout: {holdout}") + EXPERIMENT)
    return {"LOYALTY_CAMPAIGNS_DIR": str(definitions)}


def campaign_of(env: dict):
    return load_campaign_file(Path(env["LOYALTY_CAMPAIGNS_DIR"]) / "birthday.yaml")


MEMBERS = [f"V{n:03d}" for n in range(60)]


def seed(sessions) -> None:
    add_members(sessions, *(make_member(m, timezone_name="Europe/Paris", birthday=(6, 15)) for m in MEMBERS))


def test_a_tick_records_each_members_variant_and_sends_its_message_and_gift(env, pg_sessions, smtp_sink, tmp_path):
    env = {**env, **birthday_with_variants(tmp_path)}
    campaign = campaign_of(env)
    seed(pg_sessions)
    result = loyalty(env, "run", "--at", TICK, "--campaign", "birthday")
    assert result.returncode == 0, result.stderr

    with pg_sessions() as session:
        rows = session.execute(select(Member.external_id, Delivery.state, Delivery.variant, Delivery.reward_points)
                               .join(Member, Member.id == Delivery.member_id)).all()
        granted = dict(session.execute(select(Member.external_id, func.sum(PointEntry.points))
                                       .join(Member, Member.id == PointEntry.member_id).group_by(Member.external_id)).all())
    assert len(rows) == len(MEMBERS)
    for external_id, state, variant, points in rows:
        if is_held_out("birthday", external_id, 0.2):
            assert (state, variant) == ("held_out", None), external_id
            continue
        expected = variant_name(campaign, external_id)
        assert (state, variant) == ("sent", expected), external_id
        assert points == (300 if expected == "bigger" else 100)
        assert granted[external_id] == points
        [message] = smtp_sink.to(f"{external_id.lower()}@members.example")
        if expected == "bigger":
            assert message["Subject"] == "A bigger gift for you, Test: 300 points"
        else:
            assert message["Subject"] == "Happy birthday, Test! 100 points for you"
    sent = [variant for _, state, variant, _ in rows if state == "sent"]
    assert {"control", "bigger"} <= set(sent)  # 60 members: both variants have some

    # support sees which variant a member got (which subject, which gift), and no variant when held out
    member = next(m for m in MEMBERS if not is_held_out("birthday", m, 0.2) and variant_name(campaign, m) == "bigger")
    history = loyalty(env, "history", "--member", member, "--json")
    [delivery] = [json.loads(line) for line in history.stdout.splitlines() if json.loads(line)["type"] == "delivery"]
    assert (delivery["summary"], delivery["variant"]) == ("birthday by email, variant bigger: sent; 300 points", "bigger")
    held_out = next(m for m in MEMBERS if is_held_out("birthday", m, 0.2))
    history = loyalty(env, "history", "--member", held_out, "--json")
    [delivery] = [json.loads(line) for line in history.stdout.splitlines() if json.loads(line)["type"] == "delivery"]
    assert (delivery["summary"].split(":")[0], delivery["variant"]) == ("birthday by email", None)


def test_preview_json_and_simulate_show_each_members_variant_and_the_split(env, pg_sessions, tmp_path):
    env = {**env, **birthday_with_variants(tmp_path)}
    campaign = campaign_of(env)
    seed(pg_sessions)
    preview = loyalty(env, "preview", "birthday", "--at", TICK, "--json")
    assert preview.returncode == 0, preview.stderr
    lines = [json.loads(line) for line in preview.stdout.splitlines()]
    assert len(lines) == len(MEMBERS)
    for line in lines:
        if line["status"] == "held_out":
            assert "variant" not in line
        else:
            assert line["variant"] == variant_name(campaign, line["member"])
            assert line["reward"] == {"points": 300 if line["variant"] == "bigger" else 100}
    split = {name: sum(1 for line in lines if line.get("variant") == name) for name in ("control", "bigger")}

    table = loyalty(env, "preview", "birthday", "--at", TICK)
    assert table.returncode == 0, table.stderr
    first = next(line for line in lines if line["status"] == "planned")
    assert row(table.stdout, first["member"])[4] == first["variant"]
    out = " ".join(table.stdout.split())
    total = split["control"] + split["bigger"]
    assert (f"birthday: experiment gift_size: control {split['control']} ({split['control'] / total:.1%}, share 50%), "
            f"bigger {split['bigger']} ({split['bigger'] / total:.1%}, share 50%).") in out

    simulated = loyalty(env, "simulate", "--from", "2027-06-15", "--to", "2027-06-15", "--json")
    assert simulated.returncode == 0, simulated.stderr
    day = json.loads(simulated.stdout)
    assert day["variants"] == split and day["send"] == total
    text = loyalty(env, "simulate", "--from", "2027-06-15", "--to", "2027-06-15")
    assert f"birthday: experiment gift_size: control {split['control']} (" in " ".join(text.stdout.split())


def test_preview_writes_a_rendered_copy_of_each_sample_and_links_it(env, pg_sessions, tmp_path):
    env = {**env, **birthday_with_variants(tmp_path, holdout="0")}
    seed(pg_sessions)
    result = loyalty(env, "preview", "birthday", "--at", TICK)
    assert result.returncode == 0, result.stderr
    links = re.findall(r"(file://\S+\.html)", result.stdout.replace("\n", ""))
    assert len(links) == 3, result.stdout
    for link in links:
        page = Path(link.removeprefix("file://")).read_text()
        assert "<html" in page.lower()
        assert Path(link.removeprefix("file://")).with_suffix(".txt").read_text().startswith("Subject: ")


def seed_run_and_orders(env, sessions, smtp_sink) -> dict[str, list[str]]:
    """A tick's sends, then orders from some members: two in three of the bigger gift's, one in three
    of the control's, one in four of the held out. Returns the members by group."""
    seed(sessions)
    assert loyalty(env, "run", "--at", TICK, "--campaign", "birthday").returncode == 0
    with sessions() as session:
        rows = session.execute(select(Member.external_id, Member.id, Delivery.state, Delivery.variant)
                               .join(Member, Member.id == Delivery.member_id).order_by(Member.external_id)).all()
    groups: dict[str, list[str]] = {"control": [], "bigger": [], "held_out": []}
    for external_id, _, state, variant in rows:
        groups["held_out" if state == "held_out" else variant].append(external_id)
    ordering = set(groups["bigger"][::3] + groups["bigger"][1::3] + groups["control"][::3] + groups["held_out"][::4])
    ids = {external_id: mid for external_id, mid, _, _ in rows}
    held = set(groups["held_out"])
    with transaction(sessions) as session:
        for n, external_id in enumerate(sorted(ordering)):
            # A day after the message was sent (now: a tick's send is dated when it happens), or, for
            # the held out, after the tick's instant, when they would have been sent it.
            placed = SENT_AT + timedelta(days=1) if external_id in held else datetime.now(UTC) + timedelta(hours=1)
            session.add(Order(order_id=f"VO{n}", member_id=ids[external_id], placed_at=placed,
                              total=Decimal("30.00"), currency="EUR", status="placed"))
    groups["ordering"] = sorted(ordering)
    return groups


def test_the_report_gives_each_variants_rate_uplift_and_interval(env, pg_sessions, smtp_sink, tmp_path):
    env = {**env, **birthday_with_variants(tmp_path)}
    groups = seed_run_and_orders(env, pg_sessions, smtp_sink)
    result = loyalty(env, "report", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    [line] = [c for c in data["campaigns"] if c["campaign"] == "birthday"]
    ordering = set(groups["ordering"])

    def figures(name: str) -> tuple[int, int]:
        return sum(m in ordering for m in groups[name]), len(groups[name])

    control, bigger, held = figures("control"), figures("bigger"), figures("held_out")
    assert (line["held_out_converted"], line["held_out"]) == held
    assert data["variant_test"] == {"interval": "Newcombe hybrid score interval (method 10) for a difference of two "
                                                "proportions", "confidence": 0.95}
    first, second = line["variants"]
    assert (first["variant"], first["converted"], first["sent"]) == ("control", *control)
    assert (second["variant"], second["converted"], second["sent"]) == ("bigger", *bigger)
    assert second["conversion_rate"] == round(bigger[0] / bigger[1], 4)
    uplift = difference_interval(*bigger, *held)
    assert second["uplift_pp"] == round(uplift.difference * 100, 2)
    assert second["uplift_ci_pp"] == [round(uplift.low * 100, 2), round(uplift.high * 100, 2)]
    versus = difference_interval(*bigger, *control)
    assert second["compared_with"] == "control"
    assert second["difference_ci_pp"] == [round(versus.low * 100, 2), round(versus.high * 100, 2)]
    assert "difference_pp" not in first  # the first variant is what the others are compared with

    table = loyalty(env, "report")
    assert table.returncode == 0, table.stderr
    cells = row(table.stdout.split("A/B variants")[1], "birthday")
    assert cells[:5] == ["birthday", "control", str(control[1]), str(control[0]), f"{control[0] / control[1] * 100:.1f}%"]
    assert "Intervals: Newcombe hybrid score interval (method 10)" in " ".join(table.stdout.split())

    page = tmp_path / "out" / "report.html"
    page.parent.mkdir()
    html = loyalty(env, "report", "--html", str(page))
    assert html.returncode == 0, html.stderr
    text = page.read_text()
    assert "<h2>A/B variants</h2>" in text and "Newcombe hybrid score interval" in text
    links = re.findall(r'<a href="([^"]+)">', text)
    assert "report-samples/birthday-bigger-fr-email.html" in links
    for link in links:
        assert (page.parent / link).is_file(), link
    assert "A bigger gift for you, Alex: 500 points" in text  # the sample member is silver


def test_a_proof_goes_to_the_marketer_marked_and_leaves_the_ledger_rewards_and_cap_alone(env, pg_sessions, smtp_sink,
                                                                                            tmp_path):
    env = {**env, **birthday_with_variants(tmp_path, holdout="0")}
    campaign = campaign_of(env)
    seed(pg_sessions)
    member = next(m for m in MEMBERS if variant_name(campaign, m) == "bigger")
    result = loyalty(env, "proof", "birthday", "--member", member, "--to", "marketer@shop.example", "--as", "alice")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Proof of birthday for {member} (email, en, variant bigger) sent to "
                                    "marketer@shop.example; nothing was written to the send ledger.")
    [message] = smtp_sink.to("marketer@shop.example")
    assert message["Subject"] == "[PROOF] A bigger gift for you, Test: 300 points"
    body = message.get_body(("plain",)).get_content()
    assert f"{PUBLIC_URL}/unsubscribe/proof" in body and "/unsubscribe/proof" in message["List-Unsubscribe"]
    assert smtp_sink.to(f"{member.lower()}@members.example") == []
    with pg_sessions() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0
        assert session.scalar(select(func.count()).select_from(PointEntry)) == 0
        audit = session.execute(select(AuditEntry.actor, AuditEntry.action, AuditEntry.member_id, AuditEntry.details)).all()
    assert [(a, b, c) for a, b, c, _ in audit] == [("alice", "proof.sent", member_id(pg_sessions, member))]
    assert audit[0][3]["to"] == "marketer@shop.example" and audit[0][3]["variant"] == "bigger"
    history = loyalty(env, "history", "--member", member)
    assert "proof.sent by alice: proof of birthday to marketer@shop.example" in " ".join(history.stdout.split())

    # The member's real message is still due, with its gift, and no proof counted toward anything.
    assert loyalty(env, "run", "--at", TICK, "--campaign", "birthday").returncode == 0
    [real] = smtp_sink.to(f"{member.lower()}@members.example")
    assert real["Subject"] == "A bigger gift for you, Test: 300 points"


def test_a_proof_for_the_sample_member_and_by_sms_and_its_refusals(env, pg_sessions, smtp_sink, tmp_path):
    env = {**env, **birthday_with_variants(tmp_path, holdout="0")}
    sample = loyalty(env, "proof", "birthday", "--to", "marketer@shop.example", "--variant", "bigger", "--json")
    assert sample.returncode == 0, sample.stderr
    answer = json.loads(sample.stdout)
    assert (answer["member"], answer["variant"], answer["state"]) == ("sample", "bigger", "sent")
    [message] = smtp_sink.to("marketer@shop.example")
    assert message["Subject"] == "[PROOF] A bigger gift for you, Alex: 500 points"

    definitions = Path(env["LOYALTY_CAMPAIGNS_DIR"])
    (definitions / "points_expiring.yaml").write_text((REPO_ROOT / "campaigns" / "definitions" / "points_expiring.yaml").read_text())
    sms = loyalty(env, "proof", "points_expiring", "--channel", "sms", "--to", "+33 6 12 34 56 78")
    assert sms.returncode == 0, sms.stderr
    [written] = list((Path(env["LOYALTY_HOME"]) / "outbox" / "sms").glob("*.json"))
    content = json.loads(written.read_text())
    assert content["to"] == "+33612345678" and content["body"].startswith("[PROOF] ")

    add_members(pg_sessions, make_member("NOPE", email_opt_in=False))
    refusals = [
        (["birthday", "--to", "not-an-address"],
         "error: --to 'not-an-address' is not an email address; give the address the email proof goes to."),
        (["birthday", "--channel", "sms", "--to", "+33612345678"],
         "error: The campaign 'birthday' has no sms message to proof; its messages: email."),
        (["birthday", "--variant", "huge", "--to", "me@shop.example"],
         "error: The campaign 'birthday' has no variant 'huge'; its variants: control, bigger."),
        (["birthday", "--member", "NOPE", "--to", "me@shop.example"],
         "error: NOPE would get no email message of 'birthday' (consent_withdrawn); pick another member, or leave "
         "out --member for the sample member."),
    ]
    for args, sentence in refusals:
        refused = loyalty(env, "proof", *args)
        assert refused.returncode == 2, refused.stderr
        assert one_sentence(refused) == sentence
    with pg_sessions() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0
        assert [a for a, in session.execute(select(AuditEntry.action))] == ["proof.sent", "proof.sent"]


def test_a_one_off_send_carries_the_members_variant(env, pg_sessions, smtp_sink, tmp_path):
    env = {**env, **birthday_with_variants(tmp_path, holdout="0")}
    campaign = campaign_of(env)
    seed(pg_sessions)
    member = next(m for m in MEMBERS if variant_name(campaign, m) == "bigger")
    dry = loyalty(env, "send", "birthday", "--member", member, "--reason", "check", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    answer = json.loads(dry.stdout)
    assert answer["variant"] == "bigger" and answer["reward"] == {"points": 300}
    assert answer["message"]["subject"] == "A bigger gift for you, Test: 300 points"
    sent = loyalty(env, "send", "birthday", "--member", member, "--reason", "gift lost", "--as", "alice")
    assert sent.returncode == 0, sent.stderr
    [message] = smtp_sink.to(f"{member.lower()}@members.example")
    assert message["Subject"] == "A bigger gift for you, Test: 300 points"
    with pg_sessions() as session:
        assert session.execute(select(Delivery.variant, Delivery.reward_points)).all() == [("bigger", 300)]
