"""Forms behind the DPO workspace's action buttons. They only parse the POST into typed values;
every rule about what is allowed (reasons required, grounds per jurisdiction, legal states) is the
services' to enforce, so that the admin and the API refuse the same things with the same words."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils import timezone

from deletion.models import RejectionGround


class VerifyForm(forms.Form):
    method = forms.CharField(max_length=100)
    verifier = forms.CharField(max_length=200, required=False)
    verified_at = forms.DateTimeField(required=False)

    def evidence(self, *, default_verifier: str) -> dict[str, Any]:
        """The evidence in the API's shape (method, verified_at, verifier)."""
        data = self.cleaned_data
        return {"method": data["method"], "verifier": data["verifier"] or default_verifier,
                "verified_at": (data["verified_at"] or timezone.now()).isoformat()}


class ApproveForm(forms.Form):
    """Whole approval, or partial: ``hold`` lists the plan's version ids kept under legal hold, each
    with ``hold_reason_<id>``. ``method_<id>``: for a step that offers alternatives, the method to
    run (its own by default)."""

    hold = forms.TypedMultipleChoiceField(coerce=int, required=False)

    def __init__(self, *args: Any, plan: list[dict], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["hold"].choices = [(str(step["model_version_id"]),) * 2 for step in plan]
        self.planned = {step["model_version_id"]: step["method"] for step in plan}
        for step in plan:
            version_id = step["model_version_id"]
            self.fields[f"hold_reason_{version_id}"] = forms.CharField(max_length=5000, required=False)
            if step.get("alternatives"):
                names = [step["method"], *(a["method"] for a in step["alternatives"])]
                self.fields[f"method_{version_id}"] = forms.ChoiceField(choices=[(n, n) for n in names],
                                                                       required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        for version_id in data.get("hold", []):
            if not data.get(f"hold_reason_{version_id}", "").strip():
                raise forms.ValidationError(f"give the reason for the legal hold on model version {version_id}")
        return data

    def holds(self) -> dict[int, str]:
        return {version_id: self.cleaned_data[f"hold_reason_{version_id}"].strip()
                for version_id in self.cleaned_data["hold"]}

    def methods(self) -> dict[int, str]:
        """The methods chosen in place of the plan's (steps left at their own method are not listed)."""
        chosen = {version_id: self.cleaned_data.get(f"method_{version_id}") for version_id in self.planned}
        return {version_id: method for version_id, method in chosen.items()
                if method and method != self.planned[version_id]}


class RejectForm(forms.Form):
    ground = forms.ChoiceField(choices=RejectionGround.choices)
    reason = forms.CharField(max_length=5000, required=False)


class ExtendForm(forms.Form):
    reason = forms.CharField(max_length=5000, required=False)
    months = forms.IntegerField(required=False)
    days = forms.IntegerField(required=False)


class CancelForm(forms.Form):
    reason = forms.CharField(max_length=5000, required=False)


class VersionReasonForm(forms.Form):
    """Withdraw a model version from serving, or escalate its outcome."""

    model_version_id = forms.IntegerField(min_value=1)
    reason = forms.CharField(max_length=5000, required=False)


class ConfirmDeploymentForm(forms.Form):
    new_version_id = forms.IntegerField(min_value=1)
