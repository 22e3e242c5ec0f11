"""The strategy schema, section by section, for pipeline.strategy.

``keys``: near-miss (typo) detection. ``check``: the error collector and its message style.
``base``: the pydantic v2 ``Section`` model and :func:`validate`, which maps pydantic's errors to
``key.path: what is wrong; allowed``. ``sections``: the typed sections (the file's top level,
model, decisions, training, data_split, fuzzy memberships, nn_inputs entries).
``training_data`` and ``features``: the readers that tie sections to each other and to the
registries (indicators, fuzzy sets, inputs, timeframes).
"""
