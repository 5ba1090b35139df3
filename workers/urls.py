from django.urls import path

from workers import apis

urlpatterns = [
    path("models/<str:model_name>/versions/", apis.ModelVersionUploadApi.as_view(), name="model-version-upload"),
    path("upload-checks/<int:check_id>/", apis.UploadCheckDetailApi.as_view(), name="upload-check"),
]
