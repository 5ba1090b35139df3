"""The project's URLs plus the reports API, for the PDF download test while
deletion_platform/urls.py does not route audits.urls yet."""

from django.urls import include, path

from deletion_platform.urls import urlpatterns as project_urlpatterns

urlpatterns = [*project_urlpatterns, path("api/v1/", include("audits.urls"))]
