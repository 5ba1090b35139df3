from django.urls import path

from models_registry import apis

urlpatterns = [
    path("datasets/", apis.DatasetListApi.as_view(), name="datasets"),
    path("datasets/<int:dataset_id>/records/", apis.DatasetRecordsImportApi.as_view(), name="dataset-records-import"),
    path("training-runs/", apis.TrainingRunListApi.as_view(), name="training-runs"),
    path("training-runs/<int:run_id>/membership/", apis.TrainingMembershipImportApi.as_view(),
         name="training-membership-import"),
    path("models/", apis.RegisteredModelListApi.as_view(), name="models"),
]
