"""The service layer, plain Python (no Flask): explanations, records, key and model administration,
pictures, readiness, the idempotency flow and metrics. Views, the CLI and the job runner call it."""
