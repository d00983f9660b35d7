from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from django_jobs import schedule

from .forms import SignupForm


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "shop/home.html")


def signup(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = SignupForm(request.POST)
        if form.is_valid():
            # The job is a row in the same database: it is scheduled if, and only if,
            # the user is created.
            with transaction.atomic():
                user = form.save(commit=False)
                user.set_unusable_password()
                user.save()
                schedule(
                    "in 10 minutes",
                    "send-welcome-email",
                    {"user_id": user.pk, "email": user.email},
                )
            request.session["signed_up"] = {"username": user.username, "email": user.email}
            return redirect("signup-done")
    else:
        form = SignupForm()
    return render(request, "shop/signup.html", {"form": form})


def signup_done(request: HttpRequest) -> HttpResponse:
    signed_up = request.session.get("signed_up")
    if signed_up is None:
        return redirect("signup")
    return render(
        request,
        "shop/signup_done.html",
        {"signed_up": signed_up, "jobs_url": reverse("admin:django_jobs_job_changelist")},
    )
