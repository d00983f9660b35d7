"""Sphinx configuration of the django_jobs manual (Markdown through MyST)."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

project = "django_jobs"
author = "django_jobs developers"
copyright = "2026, django_jobs developers"
try:
    release = package_version("django-dbjobs")
except PackageNotFoundError:  # building from a checkout that is not installed
    release = "unreleased"
version = release

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
master_doc = "index"
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "alabaster"
html_theme_options = {
    "description": "Scheduled and background jobs for Django, with the admin as the GUI.",
    "fixed_sidebar": True,
}
html_static_path: list[str] = []
