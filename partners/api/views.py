from rest_framework.views import APIView

from partners.api.problems import ApiProblem


def _has_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


class ApiView(APIView):
    """Base of every v1 endpoint. Refuses NUL characters anywhere in a request: no
    database stores them (PostgreSQL text and jsonb refuse them), so they can only be
    an error or an attack, and must be a 400, never a 500."""

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if _has_nul(kwargs) or any(_has_nul(v) for v in request.query_params.lists()):
            raise ApiProblem("validation_error", 400, "Text may not contain NUL characters.")
        if request.method in ("POST", "PUT", "PATCH") and _has_nul(request.data):
            raise ApiProblem("validation_error", 400, "Text may not contain NUL characters.")
