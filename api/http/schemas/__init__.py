"""Schemas of the views alone (uploads, job submission, the audit routes): the methods and the service never
load them."""
