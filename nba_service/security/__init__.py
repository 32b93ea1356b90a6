"""TLS credentials, token auth with scopes, artifact signatures, pseudonyms and log redaction."""
