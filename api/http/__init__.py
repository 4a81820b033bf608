"""The HTTP layer: the app factory, authentication, errors, the API's documents and the v1/v2 views.
Views translate HTTP and call the service (``api.service.explanations``)."""
