"""dayone probes: the harness side. Standard library only at import time.

Heavy engine imports (torch, transformers, vllm, llama_cpp) happen inside the probe child
process, in the engine's own environment, never here.
"""

__version__ = "0.1.0"
