import re

from setuptools import find_packages, setup

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
    # One folder per area (README, design notes): every package under xpresso_env/ ships, and
    # every plugin package under plugins/ (builder_docker/, ...) as xpresso_env_plugins.<name>.
    packages=[*find_packages(include=["xpresso_env", "xpresso_env.*"]), "xpresso_env_plugins",
              *(f"xpresso_env_plugins.{name}" for name in find_packages("plugins"))],
    package_dir={"xpresso_env_plugins": "plugins"},
    # The web page (http/resources/ui.py) and its vendored Swagger UI ship inside the package: no CDN.
    package_data={"xpresso_env": ["ui/*.html", "ui/*.js", "ui/*.css", "ui/*.svg", "ui/swagger-ui/*"]},
    install_requires=[
        "falcon>=3.1",
        "waitress>=2.1",
        "pluggy>=1.0",
        "PyYAML>=6.0",
        "PyJWT>=2.8",
        "docker>=7.0",  # the Docker builder: `pip install .` must build with Docker, not fall back to Buildah
        # The `xpresso` client (xpresso_env/client): requests for HTTP (streamed, resumable log
        # follows; sessions; clear connection errors), rich for tables sized to the terminal and
        # the live progress line of a followed build.
        "requests>=2.28",
        "rich>=13.0",
        # GET /metrics: the Prometheus exposition (text and OpenMetrics) and a registry per app
        # context (CONTRACT section 10); choose_encoder needs 0.20 or later.
        "prometheus_client>=0.20",
        # Passwords of the local identity provider (CONTRACT section 13): argon2id, memory-hard, from
        # a maintained binding of the reference implementation; its hashes carry their parameters.
        "argon2-cffi>=23.1",
        # The ldap identity provider: a maintained, pure-Python LDAP v3 client (no C build, no
        # libldap headers), with connect and per-operation timeouts, StartTLS and LDAPS.
        "ldap3>=2.9",
    ],
    extras_require={
        "postgres": ["psycopg[binary]>=3.1", "psycopg_pool>=3.2"],
        "docker": [],  # kept so `pip install '.[docker]'` still works: docker is now always installed
        "test": [
            "pytest>=7",
            # Parallel workers (pytest.ini): the suite mostly waits on processes, builds and timeouts.
            "pytest-xdist>=3.5",
            "requests>=2.28",
            "openapi-spec-validator>=0.7",
            "schemathesis>=4.0",  # brings hypothesis and jsonschema-rs, which the tests use too
            "psycopg[binary]>=3.1",
            "psycopg_pool>=3.2",
            # tests/ui drive the web page in a real browser: Debian's /usr/bin/chromium (apt
            # package `chromium`, see .ci/run); Playwright's own browser download is not used.
            "playwright>=1.40",
            # tests/core/test_layers.py: the layers and the plugin SDK written down in .importlinter
            "import-linter>=2.1",
        ],
    },
    entry_points={
        "console_scripts": ["xpresso-env = xpresso_env.cli:main",
                            "xpresso = xpresso_env.client.main:main"],  # the HTTP client (README)
        # Third-party plugins register here; the built-ins are listed in xpresso_env/plugin.py.
        "xpresso_env": [],
    },
)
