"""The HTTP layer: the WSGI edge, one error mapping, the resources, the OpenAPI document."""
