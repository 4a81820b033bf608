"""Multipart file fields (flask-smorest's ``Upload``) of model registration and job submission. Only the views
import this module: the other schema modules stay free of Flask, since the service and the methods import
them."""

from __future__ import annotations

from flask_smorest.fields import Upload

from api.http.schemas.jobs import JobFormSchema
from api.schemas.common import StrictSchema


class RegisterFilesSchema(StrictSchema):
    artifact = Upload(
        metadata={
            "description": "Tabular: the model in the manifest's format (default: the estimator or "
            "Pipeline saved with skops); none for a remote model (format: remote). Text: a zip or tar(.gz) "
            "of the model directory (config.json, safetensors weights, tokenizer files)"
        },
    )
    reference = Upload(
        metadata={"description": "Reference (background) rows, Parquet or CSV (tabular models)"}
    )


class JobFilesSchema(StrictSchema):
    file = Upload(
        required=True,
        metadata={
            "description": "The rows: CSV with a header, or Parquet; one column per model feature "
            "(text models: one column `text`)"
        },
    )


class JobMultipartSchema(JobFormSchema):
    """The multipart body as documented (form fields and the file)."""

    file = Upload(required=True, metadata={"description": "CSV with a header, or Parquet"})
