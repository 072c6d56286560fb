"""RFC 9457 problem+json for every API error, from one exception handler.

Domain errors of apps further right (e.g. the ledger's InsufficientPoints) are
registered here with their HTTP status, so the API speaks one error language without
this app importing theirs."""

import logging

from django.core.exceptions import RequestDataTooBig
from django.http import Http404, JsonResponse
from django.utils.translation import gettext as _
from rest_framework import exceptions, status
from rest_framework.response import Response

log = logging.getLogger(__name__)
CONTENT_TYPE = "application/problem+json"
_REGISTRY: dict[type[Exception], tuple[int, str]] = {}

TITLES = {
    "validation_error": "Invalid request",
    "malformed_json": "Malformed JSON",
    "idempotency_key_required": "Idempotency-Key header required",
    "authentication_failed": "Authentication failed",
    "permission_denied": "Permission denied",
    "not_found": "Not found",
    "member_not_found": "Member not found",
    "purchase_not_found": "Purchase not found",
    "voucher_not_found": "Voucher not found",
    "redemption_not_found": "Redemption not found",
    "idempotency_key_in_use": "Idempotency key in use",
    "duplicate_receipt": "Duplicate receipt",
    "insufficient_points": "Not enough points",
    "member_exists": "Member exists",
    "idempotency_key_reused": "Idempotency key reused",
    "return_exceeds_purchase": "Return exceeds purchase",
    "currency_mismatch": "Currency mismatch",
    "throttled": "Too many requests",
    "method_not_allowed": "Method not allowed",
    "unsupported_media_type": "Unsupported media type",
    "not_acceptable": "Not acceptable",
    "payload_too_large": "Request body too large",
    "server_error": "Server error",
}


class ApiProblem(exceptions.APIException):
    """Raise to answer with a problem document."""

    def __init__(self, code: str, status_code: int, detail: str, errors=None, **extra):
        super().__init__(detail=detail, code=code)
        self.status_code = status_code
        self.problem_code = code
        self.errors = errors
        self.extra = extra


def register(exc_class: type[Exception], status_code: int, code: str | None = None) -> None:
    """Answer `exc_class` (which has `.code` and `.message`) with `status_code`."""
    _REGISTRY[exc_class] = (status_code, code or "")


def problem_body(code: str, status_code: int, detail: str, errors=None, **extra) -> dict:
    body = {
        "type": f"/api/v1/problems/{code}",
        "title": TITLES.get(code, code.replace("_", " ").capitalize()),
        "status": status_code,
        "detail": detail,
        "code": code,
    }
    if errors:
        body["errors"] = errors
    body.update(extra)
    return body


def _flatten(errors, prefix=""):
    """DRF's nested errors as {"lines[0].sku": ["..."]}: one flat map a till can show."""
    if isinstance(errors, dict):
        out = {}
        for key, value in errors.items():
            if key == "non_field_errors":  # an error of the object itself, e.g. an empty list
                name = prefix or "_"
            elif isinstance(key, int) or str(key).isdigit():  # a list item, keyed by index
                name = f"{prefix}[{key}]"
            else:
                name = f"{prefix}.{key}" if prefix else key
            out.update(_flatten(value, name))
        return out
    if isinstance(errors, list) and errors and not all(isinstance(e, str) for e in errors):
        out = {}
        for index, value in enumerate(errors):
            out.update(_flatten(value, f"{prefix}[{index}]"))
        return out
    return {prefix or "_": [str(e) for e in (errors if isinstance(errors, list) else [errors])]}


def problem_for(exc: Exception) -> tuple[int, dict, dict] | None:
    """(status, body, headers) for a known exception, or None for a bug (→ 500)."""
    headers = {}
    if isinstance(exc, ApiProblem):
        return (
            exc.status_code,
            problem_body(
                exc.problem_code, exc.status_code, str(exc.detail), exc.errors, **exc.extra
            ),
            headers,
        )
    for exc_class, (status_code, code) in _REGISTRY.items():
        if isinstance(exc, exc_class):
            code = code or getattr(exc, "code", "validation_error")
            message = getattr(exc, "message", str(exc))
            extra = getattr(exc, "problem_extra", {})
            return status_code, problem_body(code, status_code, message, **extra), headers
    if isinstance(exc, exceptions.ParseError):
        return (
            400,
            problem_body(
                "malformed_json",
                400,
                _("The request body is not valid JSON: %(e)s") % {"e": exc.detail},
            ),
            headers,
        )
    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
        return (
            400,
            problem_body("validation_error", 400, _("Some fields are invalid."), errors),
            headers,
        )
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        return (
            401,
            problem_body("authentication_failed", 401, str(exc.detail)),
            {"WWW-Authenticate": "Api-Key"},
        )
    if isinstance(exc, exceptions.PermissionDenied):
        return 403, problem_body("permission_denied", 403, str(exc.detail)), headers
    if isinstance(exc, exceptions.NotFound | Http404):
        return 404, problem_body("not_found", 404, _("Not found.")), headers
    if isinstance(exc, exceptions.Throttled):
        wait = int(exc.wait or 1)
        return (
            429,
            problem_body("throttled", 429, _("Too many requests; retry in %(s)d s.") % {"s": wait}),
            {"Retry-After": str(wait)},
        )
    if isinstance(exc, exceptions.MethodNotAllowed):
        return 405, problem_body("method_not_allowed", 405, str(exc.detail)), headers
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return 415, problem_body("unsupported_media_type", 415, str(exc.detail)), headers
    if isinstance(exc, exceptions.NotAcceptable):
        return 406, problem_body("not_acceptable", 406, str(exc.detail)), headers
    if isinstance(exc, RequestDataTooBig):
        return (
            413,
            problem_body("payload_too_large", 413, _("The request body is too large.")),
            headers,
        )
    return None


def exception_handler(exc, context):
    found = problem_for(exc)
    if found is None:
        log.exception("Unhandled API error", exc_info=exc)
        found = (
            500,
            problem_body(
                "server_error",
                500,
                _(
                    "Something went wrong on our side; nothing was recorded. "
                    "Retry with the same Idempotency-Key."
                ),
            ),
            {},
        )
    status_code, body, headers = found
    return Response(body, status=status_code, headers=headers, content_type=CONTENT_TYPE)


def api_404(request, exception=None, **kwargs):
    return JsonResponse(
        problem_body("not_found", 404, _("No such endpoint.")),
        status=status.HTTP_404_NOT_FOUND,
        content_type=CONTENT_TYPE,
    )
