"""Load llama.cpp models without extra buffer types (AMX, CPU weight repacking).

Why: llama.cpp built with ``-march=native`` on a CPU that reports AMX-INT8 moves Q4/Q8
weights into an AMX buffer, and on the project's VMs the first matmul then dies with a
general protection fault in ``libggml-cpu`` (SmolLM2 Q4_1: SIGSEGV on the first token;
reproduced with llama-cpp-python 0.3.36). With ``use_extra_bufts = False`` the same model
runs (~50 tok/s on 1 thread). F32 models such as the tiny test GGUF never use AMX.

``llama_cpp.Llama`` has no parameter for it, so `without_extra_buffers` swaps the binding's
``llama_model_default_params`` for one that clears the flag while models load. It patches
process-wide state: not thread-safe; load models from one thread while it is active.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llama_cpp import llama_cpp as _lib

__all__ = ["without_extra_buffers"]


@contextlib.contextmanager
def without_extra_buffers() -> Iterator[None]:
    """Models loaded inside this block use plain CPU buffers only. Imports llama_cpp (only
    the model server process needs it: importing it costs ~0.2 s and leaves /dev/null
    open)."""
    from llama_cpp import llama_cpp as _lib  # noqa: PLC0415 - see the docstring

    original = _lib.llama_model_default_params

    def plain() -> _lib.llama_model_params:
        params: _lib.llama_model_params = original()
        params.use_extra_bufts = False
        return params

    _lib.llama_model_default_params = plain
    try:
        yield
    finally:
        _lib.llama_model_default_params = original
