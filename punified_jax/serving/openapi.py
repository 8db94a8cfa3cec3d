"""The service's OpenAPI 3.1 document (written by hand from request_validation's rules, so the
schema and the validator say the same thing) and a self-contained /docs page (no CDN)."""

from __future__ import annotations

from typing import Any

ENTITY = {
    "type": "object",
    "properties": {"type": {"type": "string"}, "text": {"type": "string"},
                   "start": {"type": "integer", "description": "character offset (inclusive)"},
                   "end": {"type": "integer", "description": "character offset (exclusive)"},
                   "score": {"type": "number", "minimum": 0, "maximum": 1}},
    "required": ["type", "text", "start", "end", "score"],
}
ERROR = {
    "type": "object",
    "properties": {"error": {"type": "object", "properties": {
        "status": {"type": "integer"},
        "field": {"type": ["string", "null"], "description": "e.g. texts[3], types[0], body"},
        "message": {"type": "string"}}}},
}


def document(info: dict[str, Any]) -> dict[str, Any]:
  limits = info["limits"]
  request = {
      "type": "object",
      "additionalProperties": False,
      "properties": {
          "texts": {"type": "array", "items": {"type": "string",
                                                "maxLength": limits["max_text_chars"]},
                    "maxItems": limits["max_texts"]},
          "text": {"type": "string", "maxLength": limits["max_text_chars"],
                   "description": "one text instead of texts"},
          "types": {"type": "array", "items": {"type": "string",
                                                "maxLength": limits["max_type_chars"]},
                    "minItems": 1, "maxItems": limits["max_types"], "uniqueItems": True,
                    "description": f"entity types to find; known: {', '.join(info['types'])}"},
          "dataset": {"type": "string", "enum": sorted(info["datasets"]),
                      "description": "all types of a dataset instead of types"},
          "beam_size": {"type": "integer", "enum": info["decoding"]["beam_sizes"],
                        "default": info["decoding"]["default_beam_size"]},
          "constrained": {"type": "boolean", "default": True},
      },
      "example": {"texts": ["张三昨天去了北京大学。"], "types": ["地点", "组织"]},
  }
  result = {"type": "object", "properties": {
      "entities": {"type": "array", "items": ENTITY},
      "windows": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}},
                  "description": "[start, end) character ranges the text was decoded in"}}}
  errors = {str(code): {"description": text, "content": {"application/json": {"schema": ERROR}}}
            for code, text in ((413, "a limit is exceeded (body, texts, characters, types, "
                                     "model windows)"),
                               (422, "malformed request; field names where"),
                               (429, "queue full; see Retry-After"),
                               (503, "warming up or shutting down"),
                               (504, "not answered before the request deadline"))}
  simple = {"200": {"description": "OK", "content": {"application/json": {}}}}
  return {
      "openapi": "3.1.0",
      "info": {"title": "punified-jax on-demand NER", "version": info["version"],
               "description": "Name the entity types per request; entities come back with "
                                "character offsets into your text and a score."},
      "paths": {
          "/v1/extract": {"post": {
              "summary": "extract the requested entity types from texts",
              "requestBody": {"required": True,
                              "content": {"application/json": {"schema": request}}},
              "responses": {"200": {"description": "one result per text", "headers": {
                  "Server-Timing": {"description": "where the time went, ms: read, encode, "
                                    "queue, decode, parse, total", "schema": {"type": "string"}},
                  "X-Punified-Windows": {"description": "JSON, one object per window: input "
                                         "tokens (in), bucket, output tokens (out), output "
                                         "limit hit (limit), batch rows and windows",
                                         "schema": {"type": "string"}}}, "content": {
                  "application/json": {"schema": {"type": "object", "properties": {
                      "results": {"type": "array", "items": result},
                      "types": {"type": "array", "items": {"type": "string"}},
                      "beam_size": {"type": "integer"},
                      "constrained": {"type": "boolean"}}}}}}, **errors}}},
          "/health": {"get": {"summary": "liveness", "responses": simple}},
          "/ready": {"get": {"summary": "200 once every bucket is compiled, else 503",
                             "responses": simple}},
          "/info": {"get": {"summary": "model, sizes, datasets and types, limits, version",
                            "responses": simple}},
          "/metrics": {"get": {"summary": "Prometheus text format", "responses": simple}},
      },
  }


def docs_page() -> str:
  """A page that fetches /openapi.json and lists it; no external scripts or styles."""
  return """<!doctype html><html><head><meta charset="utf-8"><title>API · punified-jax</title>
<style>body{font-family:sans-serif;max-width:60rem;margin:2rem auto}pre{background:#f4f4f4;
padding:1rem;overflow:auto}</style></head><body><h1>punified-jax HTTP API</h1>
<p>OpenAPI document: <a href="/openapi.json">/openapi.json</a>. Demo page: <a href="/">/</a>.</p>
<pre id="doc">loading…</pre><script>
fetch('/openapi.json').then(r => r.json()).then(d => {
  document.getElementById('doc').textContent = JSON.stringify(d, null, 2);
});
</script></body></html>"""

