"""The tier jobs as staff and beat run them: `run_job tier_review` and the warning e-mails."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core import mail
from django.core.management import call_command
from django.utils import timezone, translation

from loyalty import tier_notices, tiers
from loyalty.models import JobRun, MemberTier, TierChange, TierWarning
from tests.factories import MemberFactory
from tests.loyalty.tiers_helpers import buy, make_three_tiers, months


@pytest.fixture
def three_tiers(db):
    return make_three_tiers()


@pytest.fixture(autouse=True)
def english():
    """Words are asserted in English, whatever language an earlier test left active."""
    with translation.override("en"):
        yield


@pytest.mark.django_db
def test_run_job_tier_review_by_hand_twice_changes_nothing_the_second_time(three_tiers, store):
    for amount in ["1200.00", "400.00", "100.00"]:
        buy(MemberFactory(), store, amount)
    at = (timezone.now() + months(12) + timedelta(days=1)).isoformat()
    out = StringIO()
    call_command("run_job", "tier_review", "--now", at, "--batch-size", "2", stdout=out)
    assert "tier_review: 2/3 members, 2 down, 0 up, 0 renewed" in out.getvalue()
    assert "tier_review: done, 3/3 members, 2 down, 0 up, 0 renewed" in out.getvalue()
    changes = TierChange.objects.count()
    call_command("run_job", "tier_review", "--now", at, stdout=StringIO())
    assert TierChange.objects.count() == changes
    runs = JobRun.objects.filter(job="tier_review").order_by("pk")
    assert [r.counts["down"] for r in runs] == [2, 0]


def _at_risk(member, store, *, days_left=10):
    earned = timezone.now() - months(12) + timedelta(days=days_left)
    buy(member, store, "400.00", at=earned)
    MemberTier.objects.filter(member=member).update(
        since=earned, guaranteed_until=earned + months(12)
    )


@pytest.mark.django_db
def test_members_at_risk_are_warned_once_by_email_with_what_keeps_the_tier(three_tiers, store):
    told = MemberFactory(first_name="Ayşe")
    _at_risk(told, store)
    buy(told, store, "50.00")
    _at_risk(MemberFactory(), store, days_left=60)  # outside the 30-day warning window
    safe = MemberFactory()
    _at_risk(safe, store)
    buy(safe, store, "400.00")  # already qualifies for the review

    result = tier_notices.tier_warnings_send()
    assert (result.members, result.at_risk) == (1, 1)
    (message,) = mail.outbox
    assert message.to == [told.user.email]
    review_on = tiers.date_text(MemberTier.objects.get(member=told).guaranteed_until)
    assert message.subject == f"Keep your VIB status: your review is on {review_on}"
    assert f"Spend 300.00 EUR more by {review_on} to keep VIB." in message.body
    assert "you move to Insider, one tier down" in message.body
    assert "/tiers/" in message.body
    assert TierWarning.objects.get().member == told

    assert tier_notices.tier_warnings_send().members == 0  # once per review
    assert len(mail.outbox) == 1


@pytest.mark.django_db
def test_tier_warnings_job_counts_what_it_did(three_tiers, store):
    _at_risk(MemberFactory(), store)
    out = StringIO()
    call_command("run_job", "tier_warnings", stdout=out)
    assert "1 e-mails to 1 members at risk" in out.getvalue()
    assert len(mail.outbox) == 1
