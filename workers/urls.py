from django.urls import path

from workers import apis, dataset_apis

urlpatterns = [
    path("models/<str:model_name>/versions/", apis.ModelVersionUploadApi.as_view(), name="model-version-upload"),
    path("datasets/<int:dataset_id>/import/", dataset_apis.DatasetSourceImportApi.as_view(),
         name="dataset-source-import"),
    path("upload-checks/<int:check_id>/", apis.UploadCheckDetailApi.as_view(), name="upload-check"),
]
