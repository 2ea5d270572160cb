"""Tests of the image service and API: Polaris builds through the dry-run, docker and buildah builders."""
