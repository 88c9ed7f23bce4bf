"""Kubeflow Pipelines components: one thin lightweight component per stage of `tympan.stages`."""
