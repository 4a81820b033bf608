"""The Open Inference Protocol V2 (KServe V2) REST API beside Candor's own V1."""
