"""The strategy schema: key checks shared by every section (``keys``), the typed models of
the sections (``models``) and the mapping of their errors to our message style (``errors``)."""
