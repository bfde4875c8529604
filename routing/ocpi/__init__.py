"""The OCPI protocol edge: envelope, errors, headers, tokens, pagination, models."""
