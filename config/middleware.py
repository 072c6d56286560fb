"""Django's middleware, trimmed where a till's request paid for work it does not need.

1. The portal's and back office's middleware (sessions, logins, flash messages, CSRF) is
   passed by under /api/. A till's request is authenticated by its API key and answered
   in JSON: it has no session, no logged-in user and no messages, and a forged cross-site
   request cannot carry the key's header. Yet that middleware ran on every request (the
   messages' cookie storage alone builds a signer each time): 3 % of a till's purchase
   (callgrind). The API's views never read `request.session` or messages; DRF sets
   `request.user` from the key.
2. LocaleMiddleware, without its language-in-the-path lookups on a site whose URLs carry
   no language prefix (no i18n_patterns: the language comes from the cookie or the
   Accept-Language header). Django looks the path's first segment up as a language on
   every request and again on its response, and for a path such as /api/v1/purchases
   each lookup fails through two exceptions: 1.4 % of a till's purchase. Where
   i18n_patterns are used, it is Django's middleware unchanged."""

from django.conf import settings
from django.conf.urls.i18n import is_language_prefix_patterns_used
from django.contrib.auth.middleware import AuthenticationMiddleware as _Authentication
from django.contrib.messages.middleware import MessageMiddleware as _Messages
from django.contrib.sessions.middleware import SessionMiddleware as _Sessions
from django.middleware import locale
from django.middleware.csrf import CsrfViewMiddleware as _Csrf
from django.utils import translation
from django.utils.cache import patch_vary_headers

API_PREFIX = "/api/"


def _passed_by_for_api(middleware: type) -> type:
    """`middleware` (a MiddlewareMixin class), not run for requests under /api/."""

    def __call__(self, request):
        if request.path_info.startswith(API_PREFIX):
            return self.get_response(request)
        return middleware.__call__(self, request)

    def process_view(self, request, *args):
        if request.path_info.startswith(API_PREFIX):
            return None
        return middleware.process_view(self, request, *args)

    attrs = {"__call__": __call__}
    if hasattr(middleware, "process_view"):
        attrs["process_view"] = process_view
    return type(middleware.__name__, (middleware,), attrs)


SessionMiddleware = _passed_by_for_api(_Sessions)
AuthenticationMiddleware = _passed_by_for_api(_Authentication)
MessageMiddleware = _passed_by_for_api(_Messages)
# The API is authenticated by a header that a browser never sends on its own, so a
# forged cross-site request carries no key: CSRF protection has nothing to guard there.
CsrfViewMiddleware = _passed_by_for_api(_Csrf)


class LocaleMiddleware(locale.LocaleMiddleware):
    def process_request(self, request):
        if _prefixed(request):
            return super().process_request(request)
        translation.activate(translation.get_language_from_request(request))
        request.LANGUAGE_CODE = translation.get_language()
        return None

    def process_response(self, request, response):
        if _prefixed(request):
            return super().process_response(request, response)
        patch_vary_headers(response, ("Accept-Language",))
        response.headers.setdefault("Content-Language", translation.get_language())
        return response


def _prefixed(request) -> bool:
    """Whether the URLs serving this request put the language in the path."""
    return is_language_prefix_patterns_used(getattr(request, "urlconf", settings.ROOT_URLCONF))[0]
