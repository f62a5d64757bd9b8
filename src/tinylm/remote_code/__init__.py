"""Files copied into model directories whose head transformers has no class for (transformers' `auto_map`
convention: the directory loads with `trust_remote_code=True`, and refuses to load without it)."""
