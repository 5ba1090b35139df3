from django.urls import path

from deletion import apis, concept_apis, external_retrain_apis, recipient_apis

urlpatterns = [
    path("deletion-requests/", apis.DeletionRequestListApi.as_view(), name="deletion-requests"),
    path("deletion-requests/<uuid:request_id>/", apis.DeletionRequestDetailApi.as_view(), name="deletion-request"),
    path("deletion-requests/<uuid:request_id>/verify/", apis.VerifyApi.as_view(), name="deletion-request-verify"),
    path("deletion-requests/<uuid:request_id>/approve/", apis.ApproveApi.as_view(), name="deletion-request-approve"),
    path("deletion-requests/<uuid:request_id>/reject/", apis.RejectApi.as_view(), name="deletion-request-reject"),
    path("deletion-requests/<uuid:request_id>/extend/", apis.ExtendApi.as_view(), name="deletion-request-extend"),
    path("deletion-requests/<uuid:request_id>/cancel/", apis.CancelApi.as_view(), name="deletion-request-cancel"),
    path("deletion-requests/<uuid:request_id>/confirm-deployment/", apis.ConfirmDeploymentApi.as_view(),
         name="deletion-request-confirm"),
    path("deletion-requests/<uuid:request_id>/withdraw-model/", apis.WithdrawApi.as_view(),
         name="deletion-request-withdraw"),
    path("deletion-requests/<uuid:request_id>/escalate/", apis.EscalateApi.as_view(),
         name="deletion-request-escalate"),
    path("deletion-requests/<uuid:request_id>/accept-risk/", apis.AcceptRiskApi.as_view(),
         name="deletion-request-accept-risk"),
    path("concept-requests/", concept_apis.ConceptRequestListApi.as_view(), name="concept-requests"),
    path("deployments/pending/", apis.PendingDeploymentsApi.as_view(), name="deployments-pending"),
    path("webhooks/", apis.WebhookListApi.as_view(), name="webhooks"),
    path("webhooks/<int:webhook_id>/", apis.WebhookDetailApi.as_view(), name="webhook"),
    path("model-recipients/", recipient_apis.ModelRecipientListApi.as_view(), name="model-recipients"),
    path("model-recipients/<int:recipient_id>/", recipient_apis.ModelRecipientDetailApi.as_view(),
         name="model-recipient"),
    # Authorised by the upload token of an external-retrain job, not by an API token.
    path("external-retrains/<uuid:retrain_id>/upload/", external_retrain_apis.ExternalRetrainUploadApi.as_view(),
         name="external-retrain-upload"),
]
