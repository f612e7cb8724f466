"""Inference engines behind one Engine protocol: the transformers reference engine (hf) and, later, vLLM."""
