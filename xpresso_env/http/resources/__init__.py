"""Falcon resources, one module per area: parse the request, call a service, render."""
