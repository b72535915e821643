# syntax=docker/dockerfile:1
# The example Django shop (tests/e2e/django_shop) served by gunicorn. Stands in for the
# operator's own application image in deploy/docker-compose.yml.
FROM python:3.12-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
RUN pip install --no-cache-dir "Django>=5.2,<5.3" "gunicorn>=23,<24" "whitenoise>=6.7,<7" \
    && useradd --system --uid 10001 --home-dir /app shop \
    && mkdir /data && chown shop /data
COPY --chown=shop . /app
USER 10001
EXPOSE 8000
CMD ["sh", "-c", "python manage.py migrate --noinput && exec gunicorn --bind 0.0.0.0:8000 --workers 2 shop.wsgi"]
