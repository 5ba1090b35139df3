"""The project's URLs with the reports API mounted, until deletion_platform/urls.py includes
audits.urls itself (then this adds nothing)."""

from django.urls import include, path

from deletion_platform.urls import urlpatterns as project_urlpatterns

urlpatterns = list(project_urlpatterns)
if not any(getattr(pattern, "urlconf_name", None) == "audits.urls" for pattern in urlpatterns):
    urlpatterns.append(path("api/v1/", include("audits.urls")))
