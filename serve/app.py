"""``serve run serve.app:build_app key=value ...`` from a checkout.

The application is :mod:`ucd.pipelines.serve_app` of the installed package; this module only
re-exports it, so existing ``serve.app:build_app`` import paths keep working.
"""

from ucd.pipelines.serve_app import DEPLOYMENT, StudentRecommender, api, build_app, deploy, load_config

__all__ = ["DEPLOYMENT", "StudentRecommender", "api", "build_app", "deploy", "load_config"]
