from django.urls import path

from loyalty import views

app_name = "loyalty"
urlpatterns = [
    path("", views.home, name="home"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("history/", views.history, name="history"),
    path("history/<uuid:public_id>/", views.entry_detail, name="entry"),
    path("tiers/", views.tier_list, name="tiers"),
    path("membership/reminders/", views.membership_reminders, name="membership_reminders"),
]
