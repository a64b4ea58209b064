"""The Ray Serve application of ucd (``serve.app:build_app``); the logic lives in :mod:`ucd.serving`."""
