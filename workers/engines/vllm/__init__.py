"""The vLLM engine (``core.VLLMEngineCore``): interventions compiled into a shared vLLM model.

Importing this package does not import vLLM; ``core`` does, when an engine is built.
"""
