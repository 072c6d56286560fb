from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny

from loyalty.api_batches import BatchApi
from partners.api.problems import api_404

api_v1 = [
    path("", include("loyalty.api")),
    path("batches", BatchApi.as_view(), name="api-batches"),
]

public = {"authentication_classes": [], "permission_classes": [AllowAny], "throttle_classes": []}

# The API comes first: Django tries the patterns in order, and every prefix that does not
# match raises (and catches) an exception, which a till's request would pay three times.
urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("api/v1/<path:unknown>", api_404),
    path("api/schema/", SpectacularAPIView.as_view(**public), name="api-schema"),
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(url_name="api-schema", **public),
        name="api-docs",
    ),
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("i18n/", include("django.conf.urls.i18n")),
    path("", include("members.urls")),
    path("", include("loyalty.urls")),
]
