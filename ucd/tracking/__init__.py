"""MLflow: runs, the student as a pyfunc, the model registry."""
