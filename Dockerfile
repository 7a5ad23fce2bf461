# syncmon container image: `docker build -t syncmon .`
FROM python:3.11-slim-bookworm
RUN useradd --create-home --uid 10001 syncmon
WORKDIR /app
COPY pyproject.toml README.md ./
COPY syncmon ./syncmon
RUN pip install --no-cache-dir . && rm -rf /root/.cache
USER syncmon
EXPOSE 9464
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=2)" || exit 1
ENTRYPOINT ["syncmon"]
CMD ["watch", "--help"]
