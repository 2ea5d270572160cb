"""Services: the domain logic between the API and storage."""
