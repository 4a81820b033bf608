"""Explanation methods: one module each, declaring a ``MethodSpec`` (``api.methods.spec``), listed in
``api.methods.registry``."""
