"""Reference models of the challenges, one module per ``[model] kind`` (registered in ``challenges``)."""
