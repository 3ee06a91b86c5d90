"""Moderation: a workspace's policy applied to prompts and outputs on every face.

``policy`` (the schema and ``$GENLOOP_HOME/moderation.yaml``), ``matching`` (folding, blocklists,
patterns), ``pii`` (emails, phones, Luhn-valid cards), ``classifier`` (a classifier genloop trains
on the workspace's labelled examples), ``moderator`` (a policy's checks on one text: a verdict,
failing closed) and ``stream`` (hold-back, so no unchecked text leaves a stream); ``provenance`` (the
workspace's certificate authority, C2PA manifests on images, signed records). Beside ``hub``
and ``knowledge``: it reads the store and the models layer's files, never the generation layer.
"""
