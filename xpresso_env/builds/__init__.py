"""Polaris image builds: the service, queue, logs, files, retention, workspace, push."""
