"""``trainer label``: label a store's frames in the browser (docs/training.md, "Labelling a run").

:mod:`.session` holds the state (the label table, the next frame);
:mod:`.app` serves it over HTTP to the page in ``static/``.
"""
