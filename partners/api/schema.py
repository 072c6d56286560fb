"""OpenAPI: the Api-Key scheme, and every v1 operation's problem+json error answers."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension

PROBLEM = {
    "type": "object",
    "description": "RFC 9457 problem details. `code` is stable; `errors` maps fields to messages.",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "example": "/api/v1/problems/insufficient_points"},
        "title": {"type": "string", "example": "Not enough points"},
        "status": {"type": "integer", "example": 409},
        "detail": {"type": "string", "example": "Balance is 120 points; 500 were asked."},
        "code": {"type": "string", "example": "insufficient_points"},
        "errors": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
        "id": {"type": "string", "description": "duplicate_receipt: the existing purchase/return"},
        "card_number": {"type": "string", "description": "member_exists: the existing member"},
    },
    "additionalProperties": True,
}

COMMON = {
    "400": "validation_error, malformed_json or idempotency_key_required",
    "401": "authentication_failed: missing, unknown, expired or revoked key",
    "403": "permission_denied: the key lacks the scope, or another store's object",
    "404": "not_found or a specific *_not_found",
    "413": "payload_too_large",
    "415": "unsupported_media_type: send application/json",
    "429": "throttled: retry after Retry-After seconds",
}
WRITES = {
    "409": "idempotency_key_in_use, duplicate_receipt, insufficient_points or member_exists",
    "422": "idempotency_key_reused, return_exceeds_purchase or currency_mismatch",
}


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "description": "1–255 visible ASCII characters; use a UUID saved before the first send. "
    "A retry with the same key and body gets the first answer again.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
}
# POSTs that change nothing (quote) or carry a key per item (batches) need no header.
NO_KEY = {"/api/v1/purchases/quote", "/api/v1/batches"}


def add_problem_responses(result, generator, request, public):
    result.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM
    ref = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, operations in result.get("paths", {}).items():
        if not path.startswith("/api/v1/"):
            continue
        for method, operation in operations.items():
            codes = COMMON | (WRITES if method == "post" else {})
            if method == "post" and path not in NO_KEY:
                operation.setdefault("parameters", []).append(IDEMPOTENCY_KEY)
            responses = operation.setdefault("responses", {})
            for code, description in codes.items():
                responses.setdefault(code, {"description": description, "content": ref})
    return result


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "partners.api.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key <key>`: one key per till, with scopes.",
        }
