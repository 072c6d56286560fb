"""The loyalty app's subscriptions: thin callers of services, connected in apps.ready()."""

from django.core.signals import request_finished, request_started
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from loyalty import request_memo
from loyalty.models import EarningRule, MembershipPlan, Tier
from loyalty.rules import loader, services
from members.signals import member_enrolled, member_profile_completed


@receiver(member_enrolled, dispatch_uid="loyalty-sign-up-bonus")
def give_sign_up_bonus(sender, member, **kwargs):
    services.signup_bonus_award(member=member)


@receiver(member_profile_completed, dispatch_uid="loyalty-profile-completed")
def give_profile_completed_points(sender, member, **kwargs):
    services.profile_completed_award(member=member)


# Any change to a rule, its stores, a tier (rules name a minimum tier by rank) or a paid
# membership plan (its SKU, tier and benefits are cached with the rules) makes every
# process reload the rules. Signals catch the admin, the shell and fixtures alike.
@receiver(post_save, sender=EarningRule, dispatch_uid="loyalty-rules-saved")
@receiver(post_delete, sender=EarningRule, dispatch_uid="loyalty-rules-deleted")
@receiver(m2m_changed, sender=EarningRule.stores.through, dispatch_uid="loyalty-rules-stores")
@receiver(post_save, sender=Tier, dispatch_uid="loyalty-rules-tier-saved")
@receiver(post_delete, sender=Tier, dispatch_uid="loyalty-rules-tier-deleted")
@receiver(post_save, sender=MembershipPlan, dispatch_uid="loyalty-rules-plan-saved")
@receiver(post_delete, sender=MembershipPlan, dispatch_uid="loyalty-rules-plan-deleted")
def rules_changed(sender, **kwargs):
    loader.rules_changed()


# A request reads the program's rules token and settings once (loyalty/request_memo.py).
@receiver(request_started, dispatch_uid="loyalty-request-memo-begins")
def request_memo_begins(sender, **kwargs):
    request_memo.request_begins()


@receiver(request_finished, dispatch_uid="loyalty-request-memo-ends")
def request_memo_ends(sender, **kwargs):
    request_memo.request_ends()
