"""The fixed workload every engine gets, so outputs compare across engines.

The last prompt is long on purpose: at least 64 tokens under every tokenizer we ship (releases'
and the fixtures'; tests/test_workload.py counts), so that with the shrunk windows and chunk sizes
of probes/shrink_rules.json (sliding windows and attention chunks of 16, Mamba/SSM chunks of 32)
and the linear-attention kernels' fixed 64-token chunks, parity covers the sliding, chunked,
hybrid and routed paths, not only the first window."""

PROMPTS: tuple[str, ...] = (
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The lighthouse keeper climbed the spiral stairs every evening, counting one hundred and "
    "twelve steps aloud. At the top he trimmed the wick, polished the great brass lens, and "
    "wrote the weather into a leather book: wind from the west, light rain, three fishing boats "
    "returning late, a gull asleep on the rail. Then he sat by the window and watched the beam "
    "sweep slowly across the dark water, and he remembered",
)
# The shortest the long prompt may be, in tokens, under any tokenizer (the shrunk windows and
# chunks are shorter; see above).
LONG_PROMPT_MIN_TOKENS = 64
MAX_NEW_TOKENS = 16
TOP_K = 5
CHAT_MESSAGES = (
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Say hello in one word."},
)
