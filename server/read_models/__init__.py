"""Read models: the one definition of each shape the services answer with.

They are ``TypedDict`` classes, which pydantic v2 reads like models. A service builds a
read model as a plain dict (trusted data: no validation, no object per row); ``api/``
writes the response bytes with pydantic-core's serialiser for the endpoint's declared
read model (``api.http``), which writes the declared fields only; /openapi.json and
/asyncapi.json take their schemas from the same classes. So what the documents say
and what the wire carries cannot part.

One module per bounded context. Request bodies are not read models: they stay in
``api/models`` (and ``realtime/models.py``).
"""
