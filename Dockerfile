# The zhiping image: the worker, the HTTP API and the migration job of docker-compose.yml
# all run it, with different commands. Settings come only from the environment (ZHIPING_*).
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 zhiping \
    && useradd --system --uid 10001 --gid zhiping --home-dir /app --shell /usr/sbin/nologin zhiping \
    && mkdir -p /var/lib/zhiping \
    && chown zhiping:zhiping /var/lib/zhiping

WORKDIR /app

# The dependencies first, from pyproject.toml alone: a code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import subprocess, sys, tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; subprocess.check_call([sys.executable, '-m', 'pip', 'install', *deps])"

# Then the project, editable: models/policy.py reads policies/ beside the packages.
COPY . .
RUN pip install --no-deps -e .

USER zhiping
CMD ["python", "-m", "worker"]
