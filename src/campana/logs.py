"""Logging set-up: every line passes a filter that redacts tokens."""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import unquote_plus

import orjson

_TOKEN_IN_QUERY = re.compile(r"(?i)(token=)[^&\s\"']+")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_QUERY = re.compile(r"\?[^\s\"'#]+")
_TOKEN_NAMED = re.compile(r"(?i)token\s*=")
REDACTED = "[redacted]"
# Rounds of percent-decoding, so that ``%2574oken`` (encoded twice) is seen as ``token``.
_DECODINGS = 3


def redact(text: str) -> str:
    """Hide ``token=...`` query values and ``Bearer ...`` credentials, however encoded."""
    text = _QUERY.sub(_redact_query, text)
    return _BEARER.sub(rf"\g<1>{REDACTED}", _TOKEN_IN_QUERY.sub(rf"\g<1>{REDACTED}", text))


def _redact_query(query: re.Match[str]) -> str:
    """Each parameter is judged on its decoded text (``%74oken=``, ``token%3D...``, and a
    token hidden in another parameter's value all name a token once decoded) and logged
    as ``<name as sent>=[redacted]``, or wholly as ``[redacted]`` when its ``=`` was encoded."""
    parameters = query.group()[1:].split("&")
    return "?" + "&".join(_redact_parameter(parameter) for parameter in parameters)


def _redact_parameter(parameter: str) -> str:
    decoded = parameter
    for _ in range(_DECODINGS):
        decoded = unquote_plus(decoded)
    if not (_TOKEN_NAMED.search(decoded) or _BEARER.search(decoded)):
        return parameter
    name, equals, _value = parameter.partition("=")
    return f"{name}={REDACTED}" if equals else REDACTED


class RedactTokens(logging.Filter):
    """Uvicorn's access log prints the query string, the socket's token included."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line; access lines carry their fields separately."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            client, method, path, http_version, status = record.args
            line.update(client=client, method=method, path=path, status=status)
            line["http_version"] = http_version
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(line, default=str).decode()


def log_config(level: str = "INFO", log_format: str = "text") -> dict[str, Any]:
    """Uvicorn's own formats (or JSON), with the redacting filter on every handler."""
    redacting = {"redact_tokens": {"()": RedactTokens}}
    text_formatters = {
        "default": {
            "()": "uvicorn.logging.DefaultFormatter",
            "fmt": "%(levelprefix)s %(message)s",
            "use_colors": None,
        },
        "access": {
            "()": "uvicorn.logging.AccessFormatter",
            "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
        },
    }
    json_formatters = {"default": {"()": JsonFormatter}, "access": {"()": JsonFormatter}}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": redacting,
        "formatters": json_formatters if log_format == "json" else text_formatters,
        "handlers": {
            "default": {
                "formatter": "default",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "filters": ["redact_tokens"],
            },
            "access": {
                "formatter": "access",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "filters": ["redact_tokens"],
            },
        },
        "loggers": {
            "": {"handlers": ["default"], "level": level},
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["access"], "level": level, "propagate": False},
        },
    }
