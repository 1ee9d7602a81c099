"""The fixed workload every engine gets, so outputs compare across engines."""

PROMPTS: tuple[str, ...] = (
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
)
MAX_NEW_TOKENS = 16
TOP_K = 5
CHAT_MESSAGES = (
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Say hello in one word."},
)
