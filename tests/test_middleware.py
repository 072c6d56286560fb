"""The trimmed middleware (config/middleware.py) and the API's content negotiation
(partners/api/negotiation.py) behave as Django's and DRF's own, and a till's request
passes by the portal's sessions, logins, messages and CSRF check."""

import pytest
from django.http import HttpResponse
from django.middleware.locale import LocaleMiddleware as DjangoLocaleMiddleware
from django.test import RequestFactory
from django.utils import translation
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request

from config.middleware import (
    AuthenticationMiddleware,
    LocaleMiddleware,
    MessageMiddleware,
    SessionMiddleware,
)
from partners.api.negotiation import ApiContentNegotiation

LANGUAGE_CASES = [
    ("/", {}),
    ("/", {"HTTP_ACCEPT_LANGUAGE": "tr-TR,tr;q=0.9,en;q=0.5"}),
    ("/tr/", {"HTTP_ACCEPT_LANGUAGE": "en"}),
    ("/en/rewards/", {"HTTP_COOKIE": "django_language=tr"}),
    ("/api/v1/purchases", {"HTTP_ACCEPT_LANGUAGE": "tr"}),
    ("/api/v1/purchases", {"HTTP_ACCEPT_LANGUAGE": "de, fr;q=0.8"}),
    ("/accounts/login/", {"HTTP_COOKIE": "django_language=xx"}),
]


def _localised(middleware_class, path, headers, status):
    request = RequestFactory().get(path, **headers)
    middleware = middleware_class(lambda r: HttpResponse(status=status))
    with translation.override(None):
        response = middleware(request)
        return request.LANGUAGE_CODE, response["Content-Language"], response.get("Vary")


@pytest.mark.parametrize("status", [200, 404])
@pytest.mark.parametrize(("path", "headers"), LANGUAGE_CASES)
def test_the_language_is_chosen_as_djangos_middleware_chooses_it(path, headers, status):
    ours = _localised(LocaleMiddleware, path, headers, status)
    assert ours == _localised(DjangoLocaleMiddleware, path, headers, status)


@pytest.mark.django_db
def test_a_till_gets_its_errors_in_the_language_it_asks_for(client, api_key):
    key = api_key[1]
    wrong = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
    for language, detail in [("tr", "Bilinmeyen API anahtarı."), ("en", "Unknown API key.")]:
        response = client.get(
            "/api/v1/members/lookup?card=6000000000000",
            HTTP_AUTHORIZATION=f"Api-Key {wrong}",
            HTTP_ACCEPT_LANGUAGE=language,
        )
        assert response.status_code == 401
        assert response.json()["detail"] == detail
        assert response["Content-Language"] == language
        assert "Accept-Language" in response["Vary"]


def _through_portal_middleware(path):
    """The request as the view sees it after sessions, logins and messages."""
    seen = {}

    def view(request):
        seen.update(
            session=hasattr(request, "session"),
            user=hasattr(request, "user"),
            messages=hasattr(request, "_messages"),
        )
        return HttpResponse()

    handler = view
    for middleware in (MessageMiddleware, AuthenticationMiddleware, SessionMiddleware):
        handler = middleware(handler)
    response = handler(RequestFactory().get(path, HTTP_COOKIE="sessionid=abc"))
    return seen, response


@pytest.mark.django_db
def test_the_portal_has_sessions_logins_and_messages_and_a_till_has_none():
    portal, _ = _through_portal_middleware("/rewards/")
    assert portal == {"session": True, "user": True, "messages": True}
    api, response = _through_portal_middleware("/api/v1/purchases")
    assert api == {"session": False, "user": False, "messages": False}
    assert not response.cookies


@pytest.mark.django_db
def test_a_logged_in_browser_session_cannot_use_the_api(client, django_user_model):
    staff = django_user_model.objects.create_user("boss@example.com", "pw", is_staff=True)
    client.force_login(staff)
    response = client.get("/api/v1/members/lookup?card=6000000000000")
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"


ACCEPTS = [
    None, "*/*", "application/json", "application/json; indent=2", "text/html",
    "text/html, application/json;q=0.5", "application/xml", "application/*",
    "application/problem+json",
]  # fmt: skip


@pytest.mark.parametrize("accept", ACCEPTS)
@pytest.mark.parametrize("query", ["", "?format=json", "?format=api"])
@pytest.mark.parametrize(
    "renderers", [[JSONRenderer], [JSONRenderer, BrowsableAPIRenderer], [BrowsableAPIRenderer]]
)
def test_the_api_picks_the_renderer_drf_would_pick(accept, query, renderers):
    headers = {"HTTP_ACCEPT": accept} if accept else {}

    def chosen(negotiation):
        request = Request(RequestFactory().get("/api/v1/purchases" + query, **headers))
        try:
            renderer, media_type = negotiation.select_renderer(request, [r() for r in renderers])
        except Exception as exc:  # the refusal itself is compared
            return type(exc)
        return type(renderer), media_type

    assert chosen(ApiContentNegotiation()) == chosen(DefaultContentNegotiation())


@pytest.mark.django_db
def test_a_till_that_only_takes_html_is_told_so(api_client):
    refused = api_client.get("/api/v1/members/lookup?card=6000000000000", HTTP_ACCEPT="text/html")
    assert refused.status_code == 406
    assert refused.json()["code"] == "not_acceptable"
    for accept in ["*/*", "application/json"]:
        found = api_client.get("/api/v1/members/lookup?card=6000000000000", HTTP_ACCEPT=accept)
        assert found.status_code == 404
        assert found["Content-Type"].startswith("application/problem+json")


@pytest.mark.django_db
def test_the_portal_still_refuses_a_form_posted_without_its_csrf_token(django_user_model):
    from django.test import Client

    from members.models import Member

    user = django_user_model.objects.create_user("ayse@example.com", "pw")
    Member.objects.create(user=user, card_number="6000000000017")
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    assert browser.post("/profile/", {"first_name": "Forged"}).status_code == 403
    assert Member.objects.get(user=user).first_name != "Forged"


@pytest.mark.django_db
def test_a_till_posting_to_an_unknown_endpoint_gets_a_problem_not_a_csrf_page(api_key):
    from django.test import Client

    till = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Api-Key {api_key[1]}")
    response = till.post("/api/v1/refunds", {}, content_type="application/json")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "not_found"
