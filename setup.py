import re

from setuptools import setup

# One home for the version: xpresso_env/__init__.py (what `xpresso-env --version` prints).
VERSION = re.search(r'^__version__ = "([^"]+)"', open("xpresso_env/__init__.py", encoding="utf-8").read(), re.M).group(1)

# The built-in plugins live in plugins/ but are installed as `xpresso_env_plugins`:
# a top-level package called `plugins` would collide with other projects.
setup(
    name="xpresso-env",
    version=VERSION,
    description="Self-hostable XPRESSO Environment REST APIs: harnesses, engines, Polaris image builds",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=["xpresso_env", "xpresso_env.api", "xpresso_env.services", "xpresso_env.testing",
              "xpresso_env_plugins"],
    package_dir={"xpresso_env_plugins": "plugins"},
    install_requires=[
        "falcon>=3.1",
        "waitress>=2.1",
        "pluggy>=1.0",
        "PyYAML>=6.0",
        "PyJWT>=2.8",
        "docker>=7.0",  # the Docker builder: `pip install .` must build with Docker, not fall back to Buildah
    ],
    extras_require={
        "postgres": ["psycopg[binary]>=3.1", "psycopg_pool>=3.2"],
        "docker": [],  # kept so `pip install '.[docker]'` still works: docker is now always installed
        "test": [
            "pytest>=7",
            "requests>=2.28",
            "openapi-spec-validator>=0.7",
            "schemathesis>=4.0",  # brings hypothesis and jsonschema-rs, which the tests use too
            "psycopg[binary]>=3.1",
            "psycopg_pool>=3.2",
        ],
    },
    entry_points={
        "console_scripts": ["xpresso-env = xpresso_env.cli:main"],
        # Third-party plugins register here; the built-ins are listed in xpresso_env/plugin.py.
        "xpresso_env": [],
    },
)
