"""Tests of the build machinery: workspace, procrun, builder plugins."""
