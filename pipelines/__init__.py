"""Kubeflow pipelines built from components/, and how to compile, run and submit them."""
