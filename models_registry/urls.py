from django.urls import path

from models_registry import apis, membership_upload_apis

urlpatterns = [
    path("datasets/", apis.DatasetListApi.as_view(), name="datasets"),
    path("datasets/<int:dataset_id>/records/", apis.DatasetRecordsImportApi.as_view(), name="dataset-records-import"),
    path("training-runs/", apis.TrainingRunListApi.as_view(), name="training-runs"),
    path("training-runs/<int:run_id>/membership/", apis.TrainingMembershipImportApi.as_view(),
         name="training-membership-import"),
    path("training-runs/<int:run_id>/membership-uploads/", membership_upload_apis.MembershipUploadListApi.as_view(),
         name="membership-uploads"),
    path("membership-uploads/<int:upload_id>/", membership_upload_apis.MembershipUploadDetailApi.as_view(),
         name="membership-upload"),
    path("membership-uploads/<int:upload_id>/chunks/<int:number>/", membership_upload_apis.MembershipChunkApi.as_view(),
         name="membership-upload-chunk"),
    path("membership-uploads/<int:upload_id>/complete/",
         membership_upload_apis.MembershipUploadCompleteApi.as_view(), name="membership-upload-complete"),
    path("models/", apis.RegisteredModelListApi.as_view(), name="models"),
]
