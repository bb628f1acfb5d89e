"""Running a model over many inputs: batch encoding, progress reporting and process-group setup, shared by the
batch apps, the service and training."""
