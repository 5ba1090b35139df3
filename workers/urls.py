from django.urls import path

from workers import apis, dataset_apis, mlflow_apis, training_apis

urlpatterns = [
    path("models/<str:model_name>/versions/", apis.ModelVersionUploadApi.as_view(), name="model-version-upload"),
    path("datasets/<int:dataset_id>/import/", dataset_apis.DatasetSourceImportApi.as_view(),
         name="dataset-source-import"),
    path("upload-checks/<int:check_id>/", apis.UploadCheckDetailApi.as_view(), name="upload-check"),
    path("training-jobs/", training_apis.TrainingJobListApi.as_view(), name="training-jobs"),
    path("shadow-jobs/", training_apis.ShadowJobListApi.as_view(), name="shadow-jobs"),
    path("jobs/<int:job_id>/", training_apis.JobDetailApi.as_view(), name="job"),
    path("jobs/<int:job_id>/cancel/", training_apis.JobCancelApi.as_view(), name="job-cancel"),
    path("mlflow/imports/", mlflow_apis.MlflowImportApi.as_view(), name="mlflow-imports"),
    path("mlflow/syncs/", mlflow_apis.MlflowSyncListApi.as_view(), name="mlflow-syncs"),
    path("mlflow/syncs/<int:sync_id>/retry/", mlflow_apis.MlflowSyncRetryApi.as_view(), name="mlflow-sync-retry"),
]
