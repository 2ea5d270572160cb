"""What the `xpresso-env` admin commands do beyond the API: fixtures, export and import."""
