"""Domain events of the members app. Apps to the right (loyalty) subscribe; members never
imports them (DESIGN: members ← partners ← loyalty)."""

from django.dispatch import Signal

# Sent with `member=` right after a new member is saved (till, web sign-up, or first use
# of a login), inside the enrolment's transaction when there is one.
member_enrolled = Signal()

# Sent with `member=` the first time a member's profile is complete (members.services.
# member_profile_update), inside that save's transaction; never again for that member.
member_profile_completed = Signal()
