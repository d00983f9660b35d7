from django import forms
from django.contrib.auth import get_user_model


class SignupForm(forms.ModelForm):
    """A customer signs up with a username and an email address; no password in this demo."""

    email = forms.EmailField(required=True)

    class Meta:
        model = get_user_model()
        fields = ["username", "email"]
