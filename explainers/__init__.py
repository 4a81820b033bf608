"""Explainer adapters (the libraries wrapped: shap, dice-ml, captum, transformers), validated rows, adapter
instances by target, the shared Explanation envelope, narratives and pictures. Which method uses which adapter
is declared by the methods (``api.methods``)."""
