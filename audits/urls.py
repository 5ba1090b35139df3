from django.urls import path

from audits import apis

urlpatterns = [
    path("reports/<int:report_id>/", apis.ReportDetailApi.as_view(), name="report"),
    path("reports/<int:report_id>/pdf/", apis.ReportPdfApi.as_view(), name="report-pdf"),
]
